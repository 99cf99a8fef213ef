//! A stream's recordings as the API lists them and as players download them.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Server, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

/// The stream's recordings, once there are `count`.
pub fn wait_archives(server: &Server, id: &str, count: usize) -> Vec<Value> {
    let what = format!("stream {id} to have {count} recordings");
    wait_until(&what, LIMIT, Duration::from_millis(200), || {
        let list = server.get(&format!("/live_streams/{id}/archives"));
        list.assert_status(200);
        let list = list.data().as_array().unwrap().clone();
        if list.len() >= count { Ok(list) } else { Err(list) }
    })
}

/// Downloads a recording to `to`, checking the headers a player relies on; returns its bytes.
pub fn download(url: &str, to: &Path) -> Vec<u8> {
    let res = reqwest::blocking::get(url).unwrap();
    assert_eq!(res.status(), 200, "{url}");
    assert_eq!(res.headers()["content-type"], "video/mp4");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let length: usize = res.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let data = res.bytes().unwrap().to_vec();
    assert_eq!(data.len(), length);
    std::fs::write(to, &data).unwrap();
    data
}
