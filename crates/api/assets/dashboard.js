// The Oxcast dashboard: a client of the public admin API (`/v2/video/{cloud}/…`, HTTP Basic), and
// nothing else. It holds the API key and secret for the tab's life (sessionStorage), asks the API
// every POLL_MS, and updates the page in place so that the preview and the forms are left alone.
'use strict';

(() => {
  const POLL_MS = 2000;
  /// Archives are asked for every this many polls (they change when a stream goes idle).
  const ARCHIVE_EVERY = 5;
  /// Bitrate samples kept per stream for the sparkline: 3 minutes at POLL_MS.
  const HISTORY = 90;
  const AUTH_KEY = 'oxcast.auth';

  const cloud = document.querySelector('meta[name="oxcast-cloud"]').content;
  const base = `/v2/video/${encodeURIComponent(cloud)}`;
  const $ = (id) => document.getElementById(id);

  const state = {
    auth: sessionStorage.getItem(AUTH_KEY),
    streams: [],
    selected: null,
    detail: null,
    archives: [],
    ticks: 0,
    timer: null,
    history: new Map(),
    preview: { hls: null, src: null },
    view: null,
  };

  // ---- The API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  function basic(key, secret) {
    const bytes = new TextEncoder().encode(`${key}:${secret}`);
    let binary = '';
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary);
  }

  async function api(method, path, body, auth = state.auth) {
    const headers = {
      Authorization: `Basic ${auth}`,
      // Asks the API to leave WWW-Authenticate out of a 401, so the browser shows no dialog of its own.
      'X-Requested-With': 'XMLHttpRequest',
    };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    let res;
    try {
      res = await fetch(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(`The server cannot be reached (${e.message}).`, 0);
    }
    const json = await res.json().catch(() => null);
    if (!res.ok) {
      const message = json && json.error && json.error.message ? json.error.message : `${res.status} ${res.statusText}`;
      throw new ApiError(message, res.status);
    }
    return json ? json.data : null;
  }

  /// An API call made from a button: errors become a toast; a 401 signs out.
  async function act(work, done) {
    try {
      const result = await work();
      if (done) {
        toast(done);
      }
      return result;
    } catch (e) {
      if (e.status === 401) {
        signOut('Your credentials are no longer accepted: sign in again.');
      } else {
        toast(e.message, true);
      }
      return undefined;
    }
  }

  // ---- Small DOM helpers -----------------------------------------------------------------------

  /// An element: `h('div', {class: 'x', onclick: f}, child, 'text', …)`.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) {
        continue;
      }
      if (k.startsWith('on')) {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'dataset') {
        Object.assign(el.dataset, v);
      } else if (v === true) {
        el.setAttribute(k, '');
      } else {
        el.setAttribute(k, v);
      }
    }
    for (const c of children.flat()) {
      if (c !== undefined && c !== null && c !== false) {
        el.append(c instanceof Node ? c : String(c));
      }
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) {
      el.setAttribute(k, v);
    }
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) {
      el.textContent = text;
    }
  }

  function toast(message, error = false) {
    const el = h('div', { class: `toast${error ? ' error' : ''}`, role: error ? 'alert' : 'status' }, message);
    $('toasts').append(el);
    setTimeout(() => el.classList.add('leaving'), error ? 6000 : 3000);
    setTimeout(() => el.remove(), error ? 6400 : 3400);
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No clipboard API outside secure contexts (plain http on another host): the old way.
      const area = h('textarea', { class: 'offscreen', readonly: true });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    const label = button.textContent;
    button.textContent = 'Copied';
    button.classList.add('done');
    setTimeout(() => {
      button.textContent = label;
      button.classList.remove('done');
    }, 1500);
  }

  function copyButton(text, what, id) {
    return h('button', { class: 'btn ghost small', type: 'button', id, title: `Copy ${what}`, onclick: (e) => copy(text(), e.currentTarget) }, 'Copy');
  }

  /// A modal question; resolves to the text typed (or '' without an input), or null if cancelled.
  function ask({ title, message = '', label = null, value = '', placeholder = '', ok = 'OK', danger = false }) {
    const dialog = $('dialog');
    setText($('dialog-title'), title);
    setText($('dialog-message'), message);
    $('dialog-message').hidden = !message;
    $('dialog-field').hidden = label === null;
    setText($('dialog-label'), label || '');
    $('dialog-input').value = value;
    $('dialog-input').placeholder = placeholder;
    setText($('dialog-ok'), ok);
    $('dialog-ok').className = `btn ${danger ? 'danger' : 'primary'}`;
    dialog.returnValue = '';
    dialog.showModal();
    if (label !== null) {
      $('dialog-input').select();
    }
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        resolve(dialog.returnValue === 'ok' ? $('dialog-input').value.trim() : null);
      }, { once: true });
    });
  }
  $('dialog-cancel').addEventListener('click', () => $('dialog').close('cancel'));

  // ---- Formatting ------------------------------------------------------------------------------

  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  function bytes(n) {
    if (typeof n !== 'number') {
      return '—';
    }
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return `${number.format(n)} ${units[i]}`;
  }

  function kbps(n) {
    if (typeof n !== 'number') {
      return '—';
    }
    return n >= 1000 ? `${number.format(n / 1000)} Mb/s` : `${Math.round(n)} kb/s`;
  }

  function duration(sec) {
    if (typeof sec !== 'number') {
      return '—';
    }
    const s = Math.round(sec);
    const hh = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
  }

  function ago(ms) {
    if (typeof ms !== 'number') {
      return '—';
    }
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(ms).toLocaleDateString();
  }

  function lasting(ms) {
    if (typeof ms !== 'number') {
      return '—';
    }
    return duration((Date.now() - ms) / 1000);
  }

  function resolution(live) {
    const v = live && live.video;
    return v && v.width && v.height ? `${v.width}×${v.height}` : '—';
  }

  /// `avc1.64001f` → `H.264 High`, `mp4a.40.2` → `AAC-LC`: the words encoders' settings use.
  function codecName(codec) {
    if (!codec) {
      return '—';
    }
    const [kind, a, b] = codec.split('.');
    if (kind === 'avc1' || kind === 'avc3') {
      const profile = { 42: 'Baseline', '4d': 'Main', 58: 'Extended', 64: 'High' }[(a || '').slice(0, 2).toLowerCase()];
      return profile ? `H.264 ${profile}` : 'H.264';
    }
    if (kind === 'hvc1' || kind === 'hev1') return 'HEVC';
    if (kind === 'av01') return 'AV1';
    if (kind === 'mp4a') return { 2: 'AAC-LC', 5: 'HE-AAC', 29: 'HE-AACv2' }[b] || 'AAC';
    if (kind === 'opus' || kind === 'Opus') return 'Opus';
    return codec;
  }

  function streamName(s) {
    return s.name || `Stream ${s.id.slice(0, 8)}`;
  }

  function pathOf(uri) {
    try {
      return new URL(uri, location.href).pathname;
    } catch (_) {
      return uri;
    }
  }

  function hostOf(uri) {
    try {
      return new URL(uri).host;
    } catch (_) {
      return uri;
    }
  }

  function badge(kind, text) {
    return h('span', { class: `badge ${kind}` }, text);
  }

  /// `live` (receiving), `waiting` (active, but no encoder connected) or `idle`.
  function streamState(s) {
    if (s.status !== 'active') {
      return 'idle';
    }
    return s.live && s.live.publisher ? 'live' : 'waiting';
  }

  function stateBadge(shown) {
    return {
      live: () => badge('live', 'Live'),
      waiting: () => badge('warn', 'No input'),
      idle: () => badge('idle', 'Idle'),
    }[shown]();
  }

  const OUTPUT_STATUS = {
    live: ['ok', 'Live'],
    connecting: ['warn', 'Connecting'],
    retrying: ['bad', 'Retrying'],
    idle: ['idle', 'Idle'],
  };

  // ---- Signing in and out ----------------------------------------------------------------------

  function showLogin(message) {
    $('app-view').hidden = true;
    $('sign-out').hidden = true;
    $('login-view').hidden = false;
    $('login-error').hidden = !message;
    setText($('login-error'), message || '');
    $('login-key').focus();
  }

  function signOut(message) {
    clearTimeout(state.timer);
    stopPreview();
    sessionStorage.removeItem(AUTH_KEY);
    Object.assign(state, { auth: null, streams: [], selected: null, detail: null, archives: [], view: null });
    $('stream-list').replaceChildren();
    showLogin(message);
  }

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const auth = basic($('login-key').value.trim(), $('login-secret').value);
    $('login-submit').disabled = true;
    try {
      const streams = await api('GET', '/live_streams', undefined, auth);
      sessionStorage.setItem(AUTH_KEY, auth);
      state.auth = auth;
      $('login-secret').value = '';
      enter(streams);
    } catch (err) {
      showLogin(err.status === 401 ? 'That API key and secret were not accepted.' : err.message);
    } finally {
      $('login-submit').disabled = false;
    }
  });

  $('sign-out').addEventListener('click', () => signOut(''));

  function enter(streams) {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('sign-out').hidden = false;
    const wanted = new URLSearchParams(location.hash.slice(1)).get('stream');
    renderList(streams);
    if (wanted && streams.some((s) => s.id === wanted)) {
      select(wanted);
    }
    schedule();
  }

  // ---- Polling ---------------------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(tick, POLL_MS);
  }

  async function tick() {
    if (!state.auth) {
      return;
    }
    if (!document.hidden) {
      await refresh();
    }
    schedule();
  }

  async function refresh({ archives = false } = {}) {
    try {
      const streams = await api('GET', '/live_streams');
      renderList(streams);
      if (state.selected) {
        const id = state.selected;
        const stream = await api('GET', `/live_streams/${id}`).catch((e) => {
          if (e.status === 404) {
            return null;
          }
          throw e;
        });
        if (id !== state.selected) {
          return;
        }
        if (stream === null) {
          toast('This stream was deleted.');
          deselect();
          return;
        }
        const wentIdle = state.detail && state.detail.status !== stream.status;
        state.ticks += 1;
        updateDetail(stream);
        if (archives || wentIdle || state.ticks % ARCHIVE_EVERY === 0) {
          await loadArchives(id);
        }
      }
    } catch (e) {
      if (e.status === 401) {
        signOut('Your credentials are no longer accepted: sign in again.');
      } else {
        toast(e.message, true);
      }
    }
  }

  function record(stream) {
    const live = stream.live;
    const rate = live && live.video ? live.video.bitrate_kbps : undefined;
    let samples = state.history.get(stream.id);
    if (stream.status !== 'active' || typeof rate !== 'number') {
      if (stream.status !== 'active') {
        state.history.delete(stream.id);
      }
      return;
    }
    if (!samples) {
      samples = [];
      state.history.set(stream.id, samples);
    }
    const now = Date.now();
    // The list and the detail both carry the figure: one sample per poll.
    if (samples.length && now - samples[samples.length - 1].t < POLL_MS / 2) {
      samples[samples.length - 1].v = rate;
      return;
    }
    samples.push({ t: now, v: rate });
    if (samples.length > HISTORY) {
      samples.shift();
    }
  }

  // ---- The list --------------------------------------------------------------------------------

  function renderList(streams) {
    state.streams = streams;
    const list = $('stream-list');
    $('list-empty').hidden = streams.length > 0;
    const items = new Map([...list.children].map((li) => [li.dataset.id, li]));
    const sorted = [...streams].sort((a, b) => (a.status === b.status ? b.created_at - a.created_at : a.status === 'active' ? -1 : 1));
    sorted.forEach((s, i) => {
      record(s);
      let li = items.get(s.id);
      if (!li) {
        li = h('li', { dataset: { id: s.id } },
          h('button', { class: 'stream-item', type: 'button', onclick: () => select(s.id) },
            h('span', { class: 'item-top' }, h('span', { class: 'item-name' }), h('span', { class: 'item-badge' })),
            h('span', { class: 'item-meta' })));
      }
      items.delete(s.id);
      const live = s.status === 'active';
      setText(li.querySelector('.item-name'), streamName(s));
      const badgeBox = li.querySelector('.item-badge');
      const shown = streamState(s);
      if (badgeBox.dataset.state !== shown) {
        badgeBox.dataset.state = shown;
        badgeBox.replaceChildren(stateBadge(shown));
      }
      const v = s.live && s.live.video;
      const hlsOut = s.outputs.find((o) => o.type === 'hls');
      const watching = hlsOut && typeof hlsOut.viewers === 'number' ? ` · ${hlsOut.viewers} watching` : '';
      const meta = live
        ? (v ? `${resolution(s.live)} · ${number.format(v.fps || 0)} fps · ${kbps(v.bitrate_kbps)}${watching}`
          : `${shown === 'live' ? 'Receiving' : 'Waiting for the encoder'}${watching}`)
        : `Created ${ago(s.created_at)}`;
      setText(li.querySelector('.item-meta'), meta);
      li.querySelector('.stream-item').classList.toggle('selected', s.id === state.selected);
      if (list.children[i] !== li) {
        list.insertBefore(li, list.children[i] || null);
      }
    });
    items.forEach((li) => li.remove());
  }

  // ---- The selected stream ---------------------------------------------------------------------

  function select(id) {
    if (state.selected === id && state.view) {
      document.body.classList.add('showing-detail');
      return;
    }
    stopPreview();
    state.selected = id;
    state.detail = null;
    state.archives = [];
    state.view = null;
    history.replaceState(null, '', `#stream=${id}`);
    document.body.classList.add('showing-detail');
    [...$('stream-list').querySelectorAll('.stream-item')].forEach((b) => {
      b.classList.toggle('selected', b.parentElement.dataset.id === id);
    });
    const stream = state.streams.find((s) => s.id === id);
    if (stream) {
      buildDetail(stream);
      updateDetail(stream);
    }
    refresh({ archives: true });
  }

  function deselect() {
    stopPreview();
    state.selected = null;
    state.detail = null;
    state.view = null;
    history.replaceState(null, '', location.pathname);
    document.body.classList.remove('showing-detail');
    $('detail').replaceChildren($('detail-empty') || emptyDetail());
    refresh();
  }

  function emptyDetail() {
    return h('div', { class: 'empty big', id: 'detail-empty' },
      h('p', null, h('strong', null, 'Select a stream')),
      h('p', { class: 'muted' }, 'Its preview, encoder settings, outputs and recordings show here.'));
  }

  function stat(key, label, extra) {
    return h('div', { class: 'stat', dataset: { stat: key } },
      h('span', { class: 'stat-label' }, label),
      h('span', { class: 'stat-value' }, '—'),
      extra);
  }

  function field(label, input, ...buttons) {
    return h('div', { class: 'field-row' },
      h('span', { class: 'field-label' }, label),
      h('div', { class: 'field-control' }, input, ...buttons));
  }

  function buildDetail(stream) {
    const id = stream.id;
    const v = {};
    v.name = h('h1', { class: 'stream-title', id: 'stream-name' });
    v.status = h('span', { id: 'stream-status' });
    v.sub = h('p', { class: 'muted small' });
    v.kick = h('button', { class: 'btn ghost small', type: 'button', id: 'kick', title: 'Disconnect the encoder now', onclick: () => kick(id) }, 'Kick publisher');

    v.video = h('video', { id: 'preview', muted: true, autoplay: true, playsinline: true, controls: true });
    v.video.muted = true;
    v.placeholder = h('div', { class: 'player-overlay' },
      h('span', { class: 'badge idle' }, 'Offline'),
      h('p', null, 'The preview plays here while the stream is live.'));
    v.playerLink = h('a', { class: 'link', target: '_blank', rel: 'noopener', id: 'player-link' }, 'Open viewer page');

    v.sparkline = svg('svg', { class: 'sparkline', viewBox: '0 0 300 60', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    v.sparkArea = svg('path', { class: 'spark-area', d: '' });
    v.sparkLine = svg('path', { class: 'spark-line', d: '' });
    v.sparkline.append(v.sparkArea, v.sparkLine);
    v.sparkCaption = h('span', { class: 'spark-caption muted small' });
    v.stats = h('div', { class: 'stats' },
      stat('resolution', 'Resolution'),
      stat('fps', 'Frame rate'),
      stat('keyframe', 'Keyframe interval'),
      stat('codec', 'Video codec'),
      stat('received', 'Received'),
      stat('dropped', 'Dropped frames'),
      stat('audio', 'Audio'));
    v.publisher = h('p', { class: 'publisher muted small', id: 'publisher' });

    v.server = h('input', { class: 'mono', readonly: true, id: 'obs-server', 'aria-label': 'Server' });
    v.key = h('input', { class: 'mono', readonly: true, type: 'password', id: 'obs-key', 'aria-label': 'Stream key' });
    const reveal = h('button', { class: 'btn ghost small', type: 'button', id: 'reveal-key', onclick: () => {
      const shown = v.key.type === 'text';
      v.key.type = shown ? 'password' : 'text';
      reveal.textContent = shown ? 'Show' : 'Hide';
    } }, 'Show');

    v.outputs = h('ul', { class: 'outputs', id: 'outputs' });
    v.addUri = h('input', { id: 'simulcast-uri', placeholder: 'rtmp://a.rtmp.youtube.com/live2', required: true, spellcheck: 'false', 'aria-label': 'Destination URL' });
    v.addKey = h('input', { id: 'simulcast-key', placeholder: 'Stream key', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Destination stream key' });
    v.addName = h('input', { id: 'simulcast-name', placeholder: 'Name (optional)', 'aria-label': 'Output name' });
    v.addError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const add = h('form', { class: 'add-output', id: 'add-simulcast', onsubmit: (e) => addSimulcast(e, id) },
      h('h3', null, 'Relay to another platform'),
      h('div', { class: 'add-grid' }, v.addUri, v.addKey, v.addName,
        h('button', { class: 'btn primary', type: 'submit' }, 'Add output')),
      v.addError);

    v.archives = h('div', { id: 'recordings' });

    const card = (title, cls, ...body) => h('section', { class: `card ${cls}` }, h('h2', { class: 'card-title' }, title), ...body);

    const root = h('div', { class: 'detail-inner', dataset: { id } },
      h('div', { class: 'detail-head' },
        h('button', { class: 'btn ghost small back', type: 'button', onclick: () => document.body.classList.remove('showing-detail') }, '‹ Streams'),
        h('div', { class: 'title-row' }, v.name, v.status),
        v.sub,
        h('div', { class: 'actions' },
          v.kick,
          h('button', { class: 'btn ghost small', type: 'button', id: 'rename', onclick: () => rename(id) }, 'Rename'),
          h('button', { class: 'btn danger-ghost small', type: 'button', id: 'delete', onclick: () => remove(id) }, 'Delete'))),
      h('div', { class: 'detail-grid' },
        h('div', { class: 'column main' },
          card('Preview', 'preview-card', h('div', { class: 'player' }, v.video, v.placeholder),
            h('div', { class: 'card-foot' }, v.playerLink, copyButton(() => v.playerLink.href, 'the viewer page address'))),
          card('Outputs', 'outputs-card', v.outputs, add),
          card('Recordings', 'recordings-card', v.archives)),
        h('div', { class: 'column side' },
          card('Input', 'stats-card',
            h('div', { class: 'bitrate' },
              h('div', { class: 'bitrate-head' },
                h('span', { class: 'stat-label' }, 'Video bitrate'),
                h('span', { class: 'bitrate-value', id: 'bitrate' }, '—')),
              v.sparkline, v.sparkCaption),
            v.stats, v.publisher),
          card('Encoder settings', 'obs-card',
            h('p', { class: 'muted small' }, 'In OBS: Settings › Stream › Service “Custom…”. Keyframe interval 2 s.'),
            field('Server', v.server, copyButton(() => v.server.value, 'the server', 'copy-server')),
            field('Stream key', v.key, reveal, copyButton(() => v.key.value, 'the stream key', 'copy-key'))))));
    $('detail').replaceChildren(root);
    state.view = v;
  }

  function updateDetail(stream) {
    if (!state.view || $('detail').firstElementChild.dataset.id !== stream.id) {
      buildDetail(stream);
    }
    const v = state.view;
    state.detail = stream;
    record(stream);
    const active = stream.status === 'active';
    const live = active ? stream.live : undefined;
    setText(v.name, streamName(stream));
    const shown = streamState(stream);
    if (v.status.dataset.state !== shown) {
      v.status.dataset.state = shown;
      v.status.replaceChildren(stateBadge(shown));
    }
    setText(v.sub, `Created ${new Date(stream.created_at).toLocaleString()} · idle after ${stream.idle_timeout_sec} s without input`);
    v.kick.hidden = !(live && live.publisher);

    if (v.server.value !== stream.input.uri) v.server.value = stream.input.uri;
    if (v.key.value !== stream.input.stream_key) v.key.value = stream.input.stream_key;

    const hlsOutput = stream.outputs.find((o) => o.type === 'hls');
    if (hlsOutput && hlsOutput.player_uri) {
      if (v.playerLink.getAttribute('href') !== hlsOutput.player_uri) v.playerLink.href = hlsOutput.player_uri;
      v.playerLink.parentElement.hidden = false;
    } else {
      v.playerLink.parentElement.hidden = true;
    }
    updatePreview(active && hlsOutput ? pathOf(hlsOutput.uri) : null);
    updateStats(stream, live);
    renderOutputs(stream);
  }

  function updateStats(stream, live) {
    const v = state.view;
    const video = live && live.video;
    const audio = live && live.audio;
    const values = {
      resolution: resolution(live),
      fps: video && typeof video.fps === 'number' ? `${number.format(video.fps)} fps` : '—',
      keyframe: video && typeof video.keyframe_interval_sec === 'number' ? `${number.format(video.keyframe_interval_sec)} s` : '—',
      codec: video && video.codec ? codecName(video.codec) : '—',
      audio: audio ? [codecName(audio.codec), audio.sample_rate ? `${number.format(audio.sample_rate / 1000)} kHz` : null,
        audio.channels === 2 ? 'stereo' : audio.channels === 1 ? 'mono' : audio.channels ? `${audio.channels} ch` : null,
        typeof audio.bitrate_kbps === 'number' ? kbps(audio.bitrate_kbps) : null].filter(Boolean).join(' · ') : '—',
      received: live ? bytes(live.bytes_in) : '—',
      dropped: live && typeof live.dropped_frames === 'number' ? String(live.dropped_frames) : '—',
    };
    for (const [key, text] of Object.entries(values)) {
      const el = v.stats.querySelector(`[data-stat="${key}"] .stat-value`);
      setText(el, text);
      el.title = key === 'codec' && video ? video.codec : text;
    }
    setText($('bitrate'), video ? kbps(video.bitrate_kbps) : '—');
    const p = live && live.publisher;
    setText(v.publisher, p
      ? `Publisher ${p.address}${p.encoder ? ` · ${p.encoder}` : ''} · live for ${lasting(p.connected_at)}`
      : stream.status === 'active' ? 'Live, waiting for the encoder to (re)connect.' : 'Figures appear while the stream is live.');
    drawSparkline(state.history.get(stream.id) || []);
  }

  function drawSparkline(samples) {
    const v = state.view;
    if (samples.length < 2) {
      v.sparkLine.setAttribute('d', '');
      v.sparkArea.setAttribute('d', '');
      setText(v.sparkCaption, state.detail && state.detail.status === 'active' ? 'Collecting…' : 'Shows while the stream is live');
      return;
    }
    const max = Math.max(...samples.map((s) => s.v), 1) * 1.15;
    const step = 300 / (samples.length - 1);
    const x0 = 0;
    const points = samples.map((s, i) => [x0 + i * step, 58 - (s.v / max) * 54]);
    const line = points.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
    v.sparkLine.setAttribute('d', line);
    v.sparkArea.setAttribute('d', `${line}L300,60L${x0.toFixed(1)},60Z`);
    const peak = Math.max(...samples.map((s) => s.v));
    const secs = Math.round((samples[samples.length - 1].t - samples[0].t) / 1000);
    setText(v.sparkCaption, `Last ${duration(secs)} · peak ${kbps(peak)}`);
  }

  // ---- The preview -----------------------------------------------------------------------------

  function updatePreview(src) {
    const p = state.preview;
    const v = state.view;
    if (src === p.src) {
      return;
    }
    stopPreview();
    p.src = src;
    if (!src) {
      v.placeholder.hidden = false;
      return;
    }
    v.placeholder.replaceChildren(h('span', { class: 'badge warn' }, 'Starting'), h('p', null, 'Waiting for the first segment…'));
    const video = v.video;
    const onPlaying = () => { v.placeholder.hidden = true; };
    video.addEventListener('playing', onPlaying, { once: true });
    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({ liveDurationInfinity: true });
      p.hls = hls;
      hls.on(window.Hls.Events.ERROR, (_e, data) => {
        if (data.fatal && p.hls === hls) {
          // The playlist may not exist yet (no segment so far): the next poll tries again.
          stopPreview();
        }
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
      hls.loadSource(src);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = src;
      video.play().catch(() => {});
    }
  }

  function stopPreview() {
    const p = state.preview;
    if (p.hls) {
      p.hls.destroy();
      p.hls = null;
    }
    p.src = null;
    const v = state.view;
    if (v) {
      v.video.removeAttribute('src');
      v.video.load();
      v.placeholder.hidden = false;
      v.placeholder.replaceChildren(h('span', { class: 'badge idle' }, 'Offline'), h('p', null, 'The preview plays here while the stream is live.'));
    }
  }

  // ---- Outputs ---------------------------------------------------------------------------------

  function renderOutputs(stream) {
    const active = stream.status === 'active';
    const rows = stream.outputs.map((o) => {
      let title;
      let status;
      let facts = [];
      let links = [];
      let action = null;
      if (o.type === 'hls') {
        title = 'HLS';
        status = active ? (o.segments ? ['ok', 'Live'] : ['warn', 'Starting']) : ['idle', 'Idle'];
        if (active) {
          facts = [`${o.segments ?? '—'} segments`, `${o.viewers ?? 0} watching`,
            o.last_segment_at ? `last segment ${ago(o.last_segment_at)}` : null];
        }
        links = [o.player_uri ? h('a', { class: 'link', href: o.player_uri, target: '_blank', rel: 'noopener' }, 'Viewer page') : null,
          h('a', { class: 'link', href: o.uri, target: '_blank', rel: 'noopener' }, 'Playlist')];
      } else if (o.type === 'archive') {
        title = 'Recording';
        status = active ? ['ok', 'Recording'] : ['idle', 'Idle'];
        facts = [o.public_id,
          active && typeof o.recording_bytes === 'number' ? bytes(o.recording_bytes) : null,
          active && typeof o.recording_duration_sec === 'number' ? duration(o.recording_duration_sec) : null];
      } else {
        title = o.vendor ? `${o.vendor} · ${hostOf(o.uri)}` : hostOf(o.uri);
        status = OUTPUT_STATUS[o.status] || ['idle', o.status || 'Idle'];
        facts = [o.uri,
          o.bitrate_kbps > 0 && o.status === 'live' ? kbps(o.bitrate_kbps) : null,
          o.bytes_sent ? `${bytes(o.bytes_sent)} sent` : null,
          o.dropped_frames ? `${o.dropped_frames} dropped` : null,
          o.connected_at && o.status === 'live' ? `connected ${ago(o.connected_at)}` : null];
        action = h('button', { class: 'btn danger-ghost small', type: 'button', onclick: () => removeOutput(stream.id, o) }, 'Remove');
      }
      const name = o.name && !o.name.startsWith('default ') ? o.name : title;
      return h('li', { class: 'output', dataset: { type: o.type, id: o.id } },
        h('div', { class: 'output-main' },
          h('div', { class: 'output-title' }, h('strong', null, name), badge(status[0], status[1])),
          h('div', { class: 'output-facts muted small' }, facts.filter(Boolean).join(' · ')),
          o.last_error && o.status !== 'live' ? h('div', { class: 'output-error small' }, o.last_error) : null,
          links.length ? h('div', { class: 'output-links small' }, links) : null),
        action);
    });
    state.view.outputs.replaceChildren(...rows);
  }

  async function addSimulcast(e, id) {
    e.preventDefault();
    const v = state.view;
    const body = { type: 'simulcast', uri: v.addUri.value.trim() };
    if (v.addKey.value.trim()) body.stream_key = v.addKey.value.trim();
    if (v.addName.value.trim()) body.name = v.addName.value.trim();
    v.addError.hidden = true;
    try {
      await api('POST', `/live_streams/${id}/outputs`, body);
      v.addUri.value = '';
      v.addKey.value = '';
      v.addName.value = '';
      toast('Output added: it starts on the next keyframe.');
      refresh();
    } catch (err) {
      if (err.status === 401) {
        signOut('Your credentials are no longer accepted: sign in again.');
        return;
      }
      v.addError.hidden = false;
      setText(v.addError, err.message);
    }
  }

  async function removeOutput(id, output) {
    const yes = await ask({ title: 'Remove this output?', message: `Relaying to ${output.uri} stops at once.`, ok: 'Remove', danger: true });
    if (yes === null) return;
    await act(() => api('DELETE', `/live_streams/${id}/outputs/${output.id}`), 'Output removed.');
    refresh();
  }

  // ---- Recordings ------------------------------------------------------------------------------

  async function loadArchives(id) {
    const archives = await api('GET', `/live_streams/${id}/archives`).catch(() => null);
    if (archives === null || id !== state.selected || !state.view) {
      return;
    }
    state.archives = archives;
    const box = state.view.archives;
    if (!archives.length) {
      box.replaceChildren(h('p', { class: 'muted small empty-line' }, 'No recordings yet. Each live session is recorded and appears here once the stream goes idle.'));
      return;
    }
    box.replaceChildren(h('ul', { class: 'recordings' }, archives.map((a) => h('li', { class: 'recording' },
      h('div', null,
        h('strong', null, new Date(a.created_at).toLocaleString()),
        h('div', { class: 'muted small' }, `${duration(a.duration_sec)} · ${bytes(a.bytes)} · v${a.version}`)),
      h('div', { class: 'recording-actions' },
        h('a', { class: 'btn ghost small', href: a.uri, target: '_blank', rel: 'noopener' }, 'Play'),
        copyButton(() => a.uri, 'the recording address'))))));
  }

  // ---- Stream actions --------------------------------------------------------------------------

  $('new-stream').addEventListener('click', async () => {
    const name = await ask({
      title: 'New live stream',
      message: 'It gets its own stream key, an HLS output and a recording.',
      label: 'Name',
      placeholder: 'e.g. Main stage',
      ok: 'Create stream',
    });
    if (name === null) return;
    const body = { input: { type: 'rtmp' } };
    if (name) body.name = name;
    const stream = await act(() => api('POST', '/live_streams', body), 'Stream created.');
    if (stream) {
      state.streams = [...state.streams, stream];
      renderList(state.streams);
      select(stream.id);
    }
  });

  async function rename(id) {
    const current = state.detail ? state.detail.name || '' : '';
    const name = await ask({ title: 'Rename stream', label: 'Name', value: current, ok: 'Save' });
    if (name === null || name === current) return;
    if (!name) {
      toast('A name cannot be empty.', true);
      return;
    }
    await act(() => api('PATCH', `/live_streams/${id}`, { name }), 'Stream renamed.');
    refresh();
  }

  async function remove(id) {
    const stream = state.streams.find((s) => s.id === id);
    const yes = await ask({
      title: 'Delete this stream?',
      message: `“${stream ? streamName(stream) : id}” and its stream key stop working at once; a live publisher is disconnected. Recordings stay.`,
      ok: 'Delete stream',
      danger: true,
    });
    if (yes === null) return;
    const done = await act(() => api('DELETE', `/live_streams/${id}`), 'Stream deleted.');
    if (done !== undefined) {
      deselect();
    }
  }

  async function kick(id) {
    await act(() => api('POST', `/live_streams/${id}/kick`, {}), 'Publisher disconnected.');
    refresh();
  }

  // ---- Start -----------------------------------------------------------------------------------

  setText($('cloud'), cloud);
  window.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.auth) {
      refresh();
    }
  });
  if (state.auth) {
    api('GET', '/live_streams').then(enter, (e) => {
      if (e.status === 401) {
        signOut('Your credentials are no longer accepted: sign in again.');
      } else {
        sessionStorage.removeItem(AUTH_KEY);
        showLogin(e.message);
      }
    });
  } else {
    showLogin('');
  }
})();
