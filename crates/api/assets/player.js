// The viewer page: plays the stream's HLS, says "offline" while there is nothing to play, and starts
// by itself when the stream goes live.
//
// Whether the stream is live is read from its public playlist, so the page needs no credentials:
// a 404 (idle, or live without a segment yet) or an ended playlist (#EXT-X-ENDLIST, kept a while
// after the stream went idle) is offline; any other playlist is live. The page asks every
// POLL_MS while offline; while playing, the player's own reloads notice the end (`ended`) or a
// failure, and the page goes back to asking.
'use strict';

(() => {
  const POLL_MS = 2000;
  const STALL_MS = 5000;
  const video = document.getElementById('video');
  const overlay = document.getElementById('overlay');
  const badge = document.getElementById('state');
  const message = document.getElementById('message');
  const playlist = video.dataset.playlist;
  let hls = null;
  let timer = null;
  let stalled = null;
  let started = false;

  function show(state, text, label = { offline: 'Offline', live: 'Live', waiting: 'Starting' }[state]) {
    badge.className = `badge ${state}`;
    badge.textContent = label;
    message.textContent = text;
    overlay.hidden = false;
  }

  function offline() {
    stop();
    show('offline', 'This stream is offline. It will start playing here as soon as it goes live.');
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(probe, POLL_MS);
  }

  async function probe() {
    let live = false;
    try {
      const res = await fetch(playlist, { cache: 'no-store' });
      live = res.ok && !(await res.text()).includes('#EXT-X-ENDLIST');
    } catch (_) {
      live = false;
    }
    if (live) {
      start();
    } else {
      offline();
    }
  }

  function stop() {
    clearTimeout(stalled);
    started = false;
    if (hls) {
      hls.destroy();
      hls = null;
    }
    if (video.hasAttribute('src')) {
      video.removeAttribute('src');
      video.load();
    }
  }

  function start() {
    show('waiting', 'The stream is live: starting…');
    // hls.js where Media Source Extensions exist (it handles live edge and errors the same way
    // everywhere); the browser's own HLS otherwise (Safari on older iPhones).
    if (window.Hls && window.Hls.isSupported()) {
      hls = new window.Hls({ liveDurationInfinity: true });
      hls.on(window.Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) {
          offline();
        }
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => play());
      hls.loadSource(playlist);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = playlist;
      play();
    } else {
      show('offline', 'This browser cannot play HLS video.');
    }
  }

  function play() {
    video.muted = true;
    video.play().catch(() => {
      // Autoplay refused: the controls are there for the viewer to start it.
      overlay.hidden = true;
    });
  }

  // A short stall is the player's own business; a long one (the encoder dropped and the stream
  // waits for it to come back) is said.
  video.addEventListener('waiting', () => {
    if (!started) {
      return;
    }
    clearTimeout(stalled);
    stalled = setTimeout(() => show('waiting', 'Waiting for the stream to continue…', 'Paused'), STALL_MS);
  });
  video.addEventListener('playing', () => {
    started = true;
    clearTimeout(stalled);
    show('live', '');
    overlay.hidden = true;
  });
  video.addEventListener('ended', offline);
  video.addEventListener('error', () => {
    if (hls === null && video.getAttribute('src')) {
      offline();
    }
  });

  probe();
})();
