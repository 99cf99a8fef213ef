//! The receive low-water mark: while a publisher publishes, the kernel wakes the connection only
//! once `LOW_WATER` bytes wait instead of for every message. A 3 Mbit/s publisher sends ~80
//! messages a second, most of them small audio frames, and each wake-up costs more than the bytes
//! it delivers. The mark is below any 720p keyframe, so the keyframe that closes a segment is read
//! as it arrives. What stays under the mark (the audio of an audio-only stream, a final
//! FCUnpublish) is read by a tick at most `LOW_WATER_TICK` after the previous read. The ticks of
//! all connections fall on the same instants, so they share their wake-ups.
//!
//! Only a TCP socket has the mark; a connection over any other stream is woken per message.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection::READ_SIZE;

const LOW_WATER: usize = 16 * 1024;
/// Longer than a video frame interval (33 ms at 30 fps), so a video stream is never read by it.
const LOW_WATER_TICK: Duration = Duration::from_millis(50);

/// A byte stream that may have a receive low-water mark.
pub(crate) trait ReceiveLowWater {
    /// Sets the mark, once a publish is accepted; `None` when the stream has no such thing.
    fn start_low_water(&self) -> Option<std::io::Result<LowWater>>;
}

impl ReceiveLowWater for TcpStream {
    fn start_low_water(&self) -> Option<std::io::Result<LowWater>> {
        Some(LowWater::start(self))
    }
}

/// In-process pipes (the connection's tests) are read per message.
impl ReceiveLowWater for tokio::io::DuplexStream {
    fn start_low_water(&self) -> Option<std::io::Result<LowWater>> {
        None
    }
}

/// A publisher's socket under the mark, and the tick that reads what stays under it.
pub(crate) struct LowWater {
    /// The same socket, read past tokio's readiness (which knows only of wake-ups at the mark).
    socket: std::net::TcpStream,
    tick: tokio::time::Interval,
    last_read: Instant,
    scratch: Box<[u8]>,
}

impl LowWater {
    fn start(socket: &TcpStream) -> std::io::Result<Self> {
        set_receive_low_water(socket, LOW_WATER)?;
        let mirror = std::net::TcpStream::from(std::os::fd::AsFd::as_fd(socket).try_clone_to_owned()?);
        // Every connection's ticks on the same grid, so one wake-up serves them all.
        static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let grid = *GRID.get_or_init(Instant::now);
        let tick_ms = LOW_WATER_TICK.as_millis();
        let next = (grid.elapsed().as_millis() / tick_ms + 1) * tick_ms;
        let first = grid + Duration::from_millis(u64::try_from(next).unwrap_or(u64::MAX));
        let mut tick = tokio::time::interval_at(first, LOW_WATER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self {
            socket: mirror,
            tick,
            last_read: Instant::now(),
            scratch: vec![0; READ_SIZE].into_boxed_slice(),
        })
    }

    /// Resolves at the next tick.
    pub(crate) async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// The connection read from the socket: the next tick need not.
    pub(crate) fn read(&mut self) {
        self.last_read = Instant::now();
    }

    /// At a tick: whatever waits under the mark, if nothing was read for a whole tick. The bytes
    /// are in [`LowWater::take_scratch`].
    pub(crate) fn read_under_mark(&mut self) -> Option<std::io::Result<usize>> {
        if self.last_read.elapsed() < LOW_WATER_TICK {
            return None;
        }
        match std::io::Read::read(&mut self.socket, &mut self.scratch) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            result => {
                self.last_read = Instant::now();
                Some(result)
            }
        }
    }

    /// The buffer [`LowWater::read_under_mark`] read into, lent out while its bytes are handled;
    /// give it back with [`LowWater::return_scratch`].
    pub(crate) fn take_scratch(&mut self) -> Box<[u8]> {
        std::mem::take(&mut self.scratch)
    }

    pub(crate) fn return_scratch(&mut self, scratch: Box<[u8]>) {
        self.scratch = scratch;
    }
}

/// SO_RCVLOWAT: epoll reports the socket readable only once this many bytes wait.
#[allow(unsafe_code)]
fn set_receive_low_water(socket: &TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor stays open for the call (`socket` is borrowed), and the option value
    // is a live c_int whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
