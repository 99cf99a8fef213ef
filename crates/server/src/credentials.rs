//! The admin credentials: configured, or generated on first start and kept in
//! `<storage.dir>/api-credentials` as one `api_key:api_secret` line, mode 0600.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use oxcast_api::Credentials;
use oxcast_core::ids::{random_alphanumeric, random_digits};

/// File name of the generated credentials inside the storage directory.
pub(crate) const FILE: &str = "api-credentials";

/// Where the credentials came from; decides what start-up prints.
#[derive(Debug)]
pub(crate) enum Origin {
    Configured,
    Generated(PathBuf),
    Stored(PathBuf),
}

/// The configured pair, else the stored one, else a new pair written durably before it is used.
pub(crate) fn resolve(
    configured: Option<(String, String)>,
    dir: &Path,
) -> anyhow::Result<(Credentials, Origin)> {
    if let Some((key, secret)) = configured {
        return Ok((Credentials { key, secret }, Origin::Configured));
    }
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let Some((key, secret)) = text
                .trim()
                .split_once(':')
                .filter(|(k, s)| !k.is_empty() && !s.is_empty())
            else {
                bail!(
                    "{} is malformed: expected one line api_key:api_secret (delete it to generate a new pair)",
                    path.display()
                );
            };
            let credentials = Credentials {
                key: key.to_owned(),
                secret: secret.to_owned(),
            };
            Ok((credentials, Origin::Stored(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A key shaped like Cloudinary's (digits) and a 32-character secret.
            let key = random_digits(15);
            let credentials = Credentials {
                key,
                secret: random_alphanumeric(32),
            };
            write_private(&path, &format!("{}:{}\n", credentials.key, credentials.secret))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok((credentials, Origin::Generated(path)))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `contents` to `path` readable by the owner only, atomically and durably.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    // Written only where no credentials are: never replaces a pair in use.
    oxcast_core::durable::rename_new(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = resolve(None, dir.path()).unwrap();
        assert!(matches!(origin, Origin::Generated(_)));
        assert_eq!(first.key.len(), 15);
        assert!(first.key.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(first.secret.len(), 32);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, origin) = resolve(None, dir.path()).unwrap();
        assert!(matches!(origin, Origin::Stored(_)));
        assert_eq!((again.key, again.secret), (first.key, first.secret));
    }

    #[test]
    fn configured_wins_and_malformed_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = resolve(Some(("k".into(), "s".into())), dir.path()).unwrap();
        assert_eq!((c.key.as_str(), c.secret.as_str()), ("k", "s"));
        assert!(!dir.path().join(FILE).exists());
        std::fs::write(dir.path().join(FILE), "nocolon\n").unwrap();
        assert!(
            resolve(None, dir.path())
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
    }
}
