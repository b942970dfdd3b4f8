// The browser sharer (/share/): signs in, redeems the helper's code (or answers a launch), shows
// the helper's profile, asks the person to allow, captures a screen, window or tab with
// getDisplayMedia and sends it over the relay (/v1/relay) as screen frames of JPEG tiles. View
// only: control requests are declined, and the page says why. Protocols: docs/protocol.md; how
// it behaves: docs/clients.md ("Browser sharer"). Pure parts: capture.mjs (tested in node).

import {
  CHANNEL, FLAG_KEYFRAME, MODE_LABELS, closeText, encodeRelayFrame, encodeScreenFrame, errorText,
  parseControl, parseRelayFrame,
} from '/helper/proto.mjs';
import {
  CONTROL_NEEDS_AGENT, FrameRate, changedTiles, consentAction, describeProfile, encodeTiles,
  endedTextForSharer, fitWithin, mergeRects, needsKeyframe, normaliseCode, request, tileGrid,
} from './capture.mjs';

const PING_EVERY_MS = 20_000;
/** Bytes the relay socket may hold unsent before the next capture waits (about two big frames). */
const SEND_BUFFER_LIMIT = 2 * 1024 * 1024;

const $ = (id) => document.getElementById(id);
const el = {
  connStatus: $('conn-status'), error: $('error'),
  signin: $('signin'), signinButton: $('signin-button'),
  start: $('start'), codeForm: $('code-form'), code: $('code'), join: $('join'),
  launch: $('launch'), launchText: $('launch-text'), launchAccept: $('launch-accept'),
  launchDecline: $('launch-decline'), startStatus: $('start-status'), signout: $('signout'),
  session: $('session'), peerName: $('peer-name'), peerDetails: $('peer-details'), peerDomain: $('peer-domain'),
  consent: $('consent'), consentText: $('consent-text'), allow: $('allow'), decline: $('decline'),
  sessionStatus: $('session-status'), notice: $('notice'), end: $('end'),
  chatLog: $('chat-log'), chatForm: $('chat-form'), chatText: $('chat-text'), chatSend: $('chat-send'),
  shareStatus: $('share-status'), preview: $('preview'), shareStats: $('share-stats'),
};

// ---------------------------------------------------------------------------------------------
// State

let auth = null; // the Auth of /assets/auth.mjs once signed in
let ws = null;
let signedIn = false;
let pingTimer = null;
let nextId = 1;
const pending = new Map(); // request id -> the request
/** The session this page takes part in: {id, helper, mode, chat, consentMode, launch}, or null. */
let session = null;
let stream = null; // the MediaStream the person chose to share
let sharer = null; // the ScreenSender of the active session

// ---------------------------------------------------------------------------------------------
// Small UI helpers

function show(node, visible) {
  node.hidden = !visible;
}

function showError(text) {
  el.error.textContent = text;
  show(el.error, Boolean(text));
}

function setPhase(phase) {
  document.body.dataset.phase = phase;
  show(el.signin, phase === 'signedOut');
  show(el.start, phase === 'idle' || phase === 'launch');
  show(el.launch, phase === 'launch');
  show(el.session, phase === 'joined' || phase === 'active');
  el.join.disabled = phase !== 'idle';
  el.code.disabled = phase !== 'idle';
}

function helperName() {
  return session?.helper?.name || 'your helper';
}

function modeLabel(mode) {
  return MODE_LABELS[mode] ?? mode;
}

function setStatus(text) {
  el.sessionStatus.textContent = text;
}

function setNotice(text) {
  el.notice.textContent = text;
  show(el.notice, Boolean(text));
}

function addChat(who, text, at) {
  const p = document.createElement('p');
  const b = document.createElement('strong');
  b.textContent = `${who}${at ? ` (${new Date(at).toLocaleTimeString()})` : ''}: `;
  p.append(b, document.createTextNode(text));
  el.chatLog.append(p);
  el.chatLog.scrollTop = el.chatLog.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Sign-in

/**
 * Signs in with /assets/auth.mjs (docs/sign-in.md): on load only to complete a sign-in that comes
 * back from the issuer; otherwise when the person presses Sign in (it leaves the page).
 */
async function signIn(interactive) {
  let mod;
  try {
    mod = await import('/assets/auth.mjs');
  } catch (e) {
    showError(`Sign-in is not available: /assets/auth.mjs did not load (${e.message || e}).`);
    return;
  }
  const params = new URLSearchParams(location.search);
  // The issuer's answer: a code, or an error (the person cancelled), with the state.
  const returning = params.has('state') && (params.has('code') || params.has('error'));
  if (!interactive && !returning && !mod.currentAuth?.()) {
    el.signinButton.focus();
    return; // wait for the button: signing in leaves the page
  }
  el.connStatus.textContent = 'Signing in…';
  let signed;
  try {
    signed = await mod.signIn();
  } catch (e) {
    el.connStatus.textContent = 'Not signed in';
    showError(`Sign-in failed: ${e.message || e}`);
    return;
  }
  if (signed !== auth) {
    auth = signed;
    auth.onTokenRefreshed(async () => {
      // A connection whose token expires is closed unless it hears the fresh one first.
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(request.authenticate(await auth.accessToken())));
    });
  }
  connect();
}

// ---------------------------------------------------------------------------------------------
// Signalling

function send(msg) {
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    showError('Not connected to the server. Sign in again.');
    return null;
  }
  const id = nextId++;
  pending.set(id, msg);
  ws.send(JSON.stringify({ id, ...msg }));
  return id;
}

async function connect() {
  disconnect();
  showError('');
  el.connStatus.textContent = 'Connecting…';
  let socket;
  try {
    socket = new WebSocket(`wss://${location.host}/v1/signal`);
  } catch (e) {
    el.connStatus.textContent = 'Not connected';
    showError(`Could not open the connection: ${e.message}`);
    return;
  }
  ws = socket;
  socket.onopen = async () => {
    // Browsers cannot set headers: the token goes in the first message.
    socket.send(JSON.stringify(request.authenticate(await auth.accessToken())));
    send(request.ping()); // the first pong shows the token was accepted
    pingTimer = setInterval(() => send(request.ping()), PING_EVERY_MS);
  };
  socket.onmessage = (ev) => {
    if (typeof ev.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg && typeof msg === 'object') onSignal(msg);
  };
  socket.onclose = (ev) => {
    if (ws !== socket) return;
    const wasSignedIn = signedIn;
    const lost = session ? ' The session ended with it.' : '';
    cleanupSignal();
    endSessionLocally();
    el.connStatus.textContent = 'Not connected';
    setPhase('signedOut');
    if (ev.code !== 1000 || !wasSignedIn) showError(closeText('signal', ev.code, ev.reason) + lost);
  };
}

function cleanupSignal() {
  clearInterval(pingTimer);
  pingTimer = null;
  signedIn = false;
  pending.clear();
  ws = null;
}

function disconnect() {
  if (ws) {
    const s = ws;
    cleanupSignal();
    s.close(1000, 'signed out');
  }
  endSessionLocally();
}

function onSignal(msg) {
  const req = typeof msg.id === 'number' ? pending.get(msg.id) : undefined;
  if (req) pending.delete(msg.id);
  switch (msg.type) {
    case 'pong':
      if (!signedIn) {
        signedIn = true;
        const u = auth?.user;
        el.connStatus.textContent = `Signed in${u ? ` as ${u.name || u.upn}` : ''}`;
        if (!session) {
          setPhase('idle');
          el.code.focus();
        }
      }
      break;
    case 'sessionJoined':
      onJoined(msg);
      break;
    case 'launchRequested':
      onLaunchRequested(msg);
      break;
    case 'launchWithdrawn':
      if (session?.launch && session.id === msg.sessionId) {
        session = null;
        setPhase('idle');
        el.startStatus.textContent = msg.reason === 'answeredElsewhere'
          ? 'The request was answered on another of your connections.'
          : 'The helper withdrew the request.';
      }
      break;
    case 'consentRequested':
      onConsentRequested(msg);
      break;
    case 'unattendedStarting':
      if (session && msg.sessionId === session.id) {
        send(request.consent(session.id, false));
        setNotice(`${helperName()} asked for an unattended session, which was declined. ${CONTROL_NEEDS_AGENT}`);
      }
      break;
    case 'consentDeclined':
    case 'consentTimedOut':
      if (session && msg.sessionId === session.id) {
        if (session.consentMode === msg.mode) hideConsent();
        if (msg.type === 'consentTimedOut') setStatus(`The request for ${modeLabel(msg.mode)} was not answered in time.`);
      }
      break;
    case 'sessionActive':
      onActive(msg);
      break;
    case 'modeChanged':
      if (session && msg.sessionId === session.id) {
        session.mode = msg.mode;
        setChat(msg.chat);
        setStatus(`The session is now ${modeLabel(msg.mode)}. This page still only shows your screen.`);
      }
      break;
    case 'chat':
      addChat(msg.from === 'sharer' ? 'You' : helperName(), String(msg.text ?? ''), msg.at);
      break;
    case 'sessionEnded':
      if (session && msg.sessionId === session.id) {
        // A first request for control that this page declined ends the session: say why.
        const why = msg.reason === 'declined' && session.declinedText ? ` ${session.declinedText}` : '';
        const text = endedTextForSharer(msg.reason, msg.by) + why;
        endSessionLocally();
        setPhase('idle');
        el.startStatus.textContent = text;
        el.code.value = '';
        el.code.focus();
      }
      break;
    case 'error':
      onError(msg, req);
      break;
    default:
      break; // ack, and events this page does not use
  }
}

function newSession(sessionId, helperProfile, launch = false) {
  return { id: sessionId, helper: describeProfile(helperProfile), mode: null, chat: false, consentMode: null, launch };
}

function showHelper() {
  const h = session.helper;
  el.peerName.textContent = h.name;
  el.peerDetails.textContent = h.details.join(' · ');
  show(el.peerDetails, h.details.length > 0);
  if (h.verified) {
    el.peerDomain.textContent = `${h.domain} (verified)`;
    el.peerDomain.className = 'verified';
  } else {
    el.peerDomain.textContent = 'Domain NOT verified: make sure this is the person you expect.';
    el.peerDomain.className = 'unverified';
  }
}

function onJoined(msg) {
  if (!session || session.id !== msg.sessionId) session = newSession(msg.sessionId, msg.peerProfile);
  else session.helper = describeProfile(msg.peerProfile);
  session.launch = false;
  showHelper();
  el.chatLog.replaceChildren();
  setChat(false);
  setNotice('');
  hideConsent();
  setPhase('joined');
  setStatus(`You are connected to ${helperName()}. Waiting for them to ask to see your screen…`);
  el.shareStatus.textContent = 'Nothing is shared yet.';
  el.end.focus();
}

function onLaunchRequested(msg) {
  if (session) return; // busy: the broker withdraws it when another connection answers
  session = newSession(msg.sessionId, msg.helperProfile, true);
  el.launchText.textContent = `${helperName()} wants to help you on this device` +
    `${session.helper.verified ? ` (${session.helper.domain}, verified)` : ' (domain not verified)'}. Accept?`;
  el.startStatus.textContent = '';
  setPhase('launch');
  el.launchAccept.focus();
}

function onConsentRequested(msg) {
  if (!session || msg.sessionId !== session.id) return;
  if (msg.helperProfile) {
    session.helper = describeProfile(msg.helperProfile);
    showHelper();
  }
  if (consentAction(msg.mode) === 'decline') {
    send(request.consent(session.id, false));
    const text = `${helperName()} asked for ${modeLabel(msg.mode)}; this page declined it. ${CONTROL_NEEDS_AGENT}`;
    session.declinedText = text;
    setNotice(text);
    if (session.mode) {
      setStatus(`The session goes on in ${modeLabel(session.mode)}.`);
      // Tell the helper why, in words, when chat is on (the decline alone does not say).
      if (session.chat) {
        send(request.chat(session.id, CONTROL_NEEDS_AGENT));
        addChat('You (sent automatically)', CONTROL_NEEDS_AGENT, Date.now());
      }
    }
    return;
  }
  session.consentMode = msg.mode;
  el.consentText.textContent = `${helperName()} asks to see your screen (${modeLabel(msg.mode)}).`;
  show(el.consent, true);
  el.allow.disabled = false;
  setStatus(msg.expiresAt ? `Answer before ${new Date(msg.expiresAt).toLocaleTimeString()}.` : '');
  el.allow.focus();
}

function hideConsent() {
  if (session) session.consentMode = null;
  show(el.consent, false);
}

function onActive(msg) {
  if (!session || session.id !== msg.sessionId) return;
  session.mode = msg.mode;
  setChat(msg.chat);
  hideConsent();
  setPhase('active');
  setStatus(`Session active: ${helperName()} can see what you share (${modeLabel(msg.mode)}).`);
  if (!stream || !stream.active) {
    // Consent came from elsewhere or the capture stopped: nothing to send, so end it honestly.
    setStatus('Nothing is being captured, so the session is ended.');
    send(request.endSession(session.id));
    return;
  }
  if (sharer) sharer.stop();
  sharer = new ScreenSender(msg.relay, stream);
}

function onError(msg, req) {
  const text = errorText(msg.code, msg.message);
  if (req?.type === 'redeemCode') {
    el.startStatus.textContent = msg.code === 'invalidCode'
      ? `That code is not valid: check it with your helper. (${msg.code})`
      : text;
    setPhase('idle');
    el.code.select();
    return;
  }
  if (req?.type === 'chat') {
    addChat('Not sent', `${req.text} — ${text}`);
    return;
  }
  if (req?.type === 'answerLaunch') {
    session = null;
    setPhase('idle');
    el.startStatus.textContent = text;
    return;
  }
  showError(text);
}

function setChat(chat) {
  if (!session) return;
  session.chat = Boolean(chat);
  el.chatText.disabled = !session.chat;
  el.chatSend.disabled = !session.chat;
  el.chatText.placeholder = session.chat ? 'Message' : 'Chat is available once you share';
}

function stopStream() {
  if (stream) for (const t of stream.getTracks()) t.stop();
  stream = null;
  el.preview.srcObject = null;
  show(el.preview, false);
}

function endSessionLocally() {
  if (sharer) {
    sharer.stop();
    sharer = null;
  }
  stopStream();
  hideConsent();
  setNotice('');
  session = null;
  el.shareStats.textContent = '';
  el.shareStatus.textContent = 'Nothing is shared yet.';
}

// ---------------------------------------------------------------------------------------------
// Capture and the relay leg

/** Timers of the capture loop run in a worker (ticker.js), which a hidden page does not slow down. */
const ticker = (() => {
  try {
    const w = new Worker('ticker.js');
    const waiting = [];
    w.onmessage = () => waiting.shift()?.();
    w.onerror = () => {
      for (const r of waiting.splice(0)) r();
    };
    return (ms) => new Promise((r) => {
      waiting.push(r);
      w.postMessage(ms);
    });
  } catch {
    return null;
  }
})();

function sleep(ms) {
  return ticker ? ticker(ms) : new Promise((r) => setTimeout(r, ms));
}

/** Sends the captured stream over one relay leg, as screen frames of JPEG tiles. */
class ScreenSender {
  constructor(info, media) {
    this.stopped = false;
    this.paired = false;
    this.rate = new FrameRate(performance.now());
    this.key = { sentAny: false, requested: false, width: 0, height: 0 };
    this.previous = null;
    this.stats = { frames: 0, keyframes: 0, bytes: 0 };
    this.canvas = document.createElement('canvas');
    this.ctx = this.canvas.getContext('2d', { alpha: false, willReadFrequently: true });
    this.tile = document.createElement('canvas');
    this.tileCtx = this.tile.getContext('2d', { alpha: false });
    this.video = el.preview;
    this.video.srcObject = media;
    show(this.video, true);
    this.video.play().catch(() => {});
    el.shareStatus.textContent = 'Connecting to the relay…';
    try {
      this.ws = new WebSocket(`${info.wssUrl}?ticket=${encodeURIComponent(info.ticket)}`);
    } catch (e) {
      this.fail(`Could not connect to the relay: ${e.message}`);
      return;
    }
    this.ws.binaryType = 'arraybuffer';
    this.ws.onmessage = (ev) => this.onMessage(ev);
    this.ws.onclose = (ev) => this.onClose(ev);
    this.loop();
  }

  fail(text) {
    this.stopped = true;
    el.shareStatus.textContent = text;
  }

  onMessage(ev) {
    if (!(ev.data instanceof ArrayBuffer)) return;
    let frame;
    try {
      frame = parseRelayFrame(ev.data);
    } catch (e) {
      console.warn('bad relay frame:', e.message);
      return;
    }
    if (frame.channel === CHANNEL.control && frame.fromRelay) {
      const c = parseControl(frame.payload);
      if (c) this.onControl(c);
    } else if (frame.channel === CHANNEL.chat) {
      addChat(helperName(), new TextDecoder().decode(frame.payload));
    }
    // Input frames are never applied: this page is view only (the relay drops them in viewOnly anyway).
  }

  onControl(c) {
    switch (c.type) {
      case 'joined':
        el.shareStatus.textContent = `Waiting for ${helperName()} to connect…`;
        break;
      case 'paired':
        this.paired = true;
        this.key.requested = true;
        el.shareStatus.textContent = `Sharing with ${helperName()} (view only).`;
        break;
      case 'keyframeRequest':
        this.key.requested = true;
        this.rate.keyframeRequested(c.reason, performance.now());
        break;
      case 'ended':
        el.shareStatus.textContent = `The screen connection ended${c.reason ? ` (${c.reason})` : ''}.`;
        break;
      default:
        break; // modeChanged changes nothing here; unknown types are ignored
    }
  }

  onClose(ev) {
    if (this.stopped) return;
    this.stopped = true;
    el.shareStatus.textContent = closeText('relay', ev.code, ev.reason);
  }

  async loop() {
    while (!this.stopped) {
      const now = performance.now();
      const due = this.rate.nextDeadline(now);
      if (due > now) await sleep(due - now);
      if (this.stopped) break;
      if (!this.paired || this.ws.readyState !== WebSocket.OPEN || this.ws.bufferedAmount > SEND_BUFFER_LIMIT) {
        // Not paired yet, or the link is behind: wait instead of queueing frames.
        await sleep(50);
        continue;
      }
      this.rate.captureStarted(performance.now());
      try {
        await this.captureOnce();
      } catch (e) {
        this.fail(`Sharing failed: ${e.message || e}`);
        this.ws?.close(1000, 'capture failed');
      }
    }
  }

  async captureOnce() {
    const started = performance.now();
    const { width, height } = fitWithin(this.video.videoWidth, this.video.videoHeight);
    if (!width) return; // no picture yet
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.ctx.drawImage(this.video, 0, 0, width, height);
    const image = this.ctx.getImageData(0, 0, width, height);
    const keyframe = needsKeyframe(this.key, width, height);
    this.key.requested = false; // a request arriving from now on asks for the next frame
    const changed = keyframe ? tileGrid(width, height) : changedTiles(this.previous, image.data, width, height);
    const rects = mergeRects(changed);
    this.previous = image.data;
    if (rects.length === 0) return; // nothing changed: nothing is sent
    const { tiles } = await encodeTiles(rects, (r, q) => this.encodeTile(image, r, q));
    if (this.stopped) return;
    const payload = encodeScreenFrame({ width, height, tiles });
    this.ws.send(encodeRelayFrame(CHANNEL.screen, payload, keyframe ? FLAG_KEYFRAME : 0));
    Object.assign(this.key, { sentAny: true, width, height });
    this.stats.frames++;
    if (keyframe) this.stats.keyframes++;
    this.stats.bytes += payload.length;
    const ms = Math.round(performance.now() - started);
    el.shareStats.textContent = `${width}×${height}, ${this.rate.fps(performance.now())} frames/s at most; ` +
      `frames sent: ${this.stats.frames} (${this.stats.keyframes} full), ${Math.round(this.stats.bytes / 1024)} KiB; ` +
      `last: ${tiles.length} tiles, ${Math.round(payload.length / 1024)} KiB in ${ms} ms.`;
    el.preview.dataset.frames = String(this.stats.frames);
    // For diagnostics (and the e2e test, which reports them): the last frame's cost.
    Object.assign(el.preview.dataset, {
      lastTiles: String(tiles.length), lastBytes: String(payload.length), lastMs: String(ms),
    });
    if (keyframe) {
      Object.assign(el.preview.dataset, {
        keyTiles: String(tiles.length), keyBytes: String(payload.length), keyMs: String(ms),
      });
    }
  }

  encodeTile(image, r, quality) {
    // toBlob copies the canvas when called, so the next tile may be drawn at once.
    this.tile.width = r.width;
    this.tile.height = r.height;
    this.tileCtx.putImageData(image, -r.x, -r.y, r.x, r.y, r.width, r.height);
    return new Promise((resolve, reject) => {
      this.tile.toBlob((blob) => {
        if (!blob) {
          reject(new Error('the browser could not encode a tile'));
          return;
        }
        blob.arrayBuffer().then((b) => resolve(new Uint8Array(b)), reject);
      }, 'image/jpeg', quality);
    });
  }

  stop() {
    if (this.stopped && !this.ws) return;
    this.stopped = true;
    try {
      this.ws?.close(1000, 'sharer left');
    } catch {
      // already closing
    }
    this.ws = null;
  }
}

async function chooseWhatToShare() {
  stopStream();
  const media = await navigator.mediaDevices.getDisplayMedia({
    video: { frameRate: { ideal: FrameRate.MAX_FPS, max: FrameRate.MAX_FPS } },
    audio: false,
  });
  const [track] = media.getVideoTracks();
  if (!track) throw new Error('nothing to capture was chosen');
  track.addEventListener('ended', () => {
    // The browser's own "Stop sharing" button: the session ends with it.
    if (session && stream === media) {
      setStatus('You stopped sharing, so the session is ending.');
      send(request.endSession(session.id));
    }
  });
  stream = media;
  el.preview.srcObject = media;
  show(el.preview, true);
  el.preview.play().catch(() => {});
  el.shareStatus.textContent = `Ready to share ${track.label || 'your screen'}.`;
}

// ---------------------------------------------------------------------------------------------
// Buttons and forms

el.signinButton.addEventListener('click', () => signIn(true));

el.signout.addEventListener('click', async () => {
  disconnect();
  setPhase('signedOut');
  el.connStatus.textContent = 'Signed out';
  if (auth) {
    const a = auth;
    auth = null;
    await a.signOut();
  }
});

el.codeForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const code = normaliseCode(el.code.value);
  if (!code) {
    el.startStatus.textContent = 'A code is 8 letters and digits (no 0, 1, I or O), like 7KQ4-MZ2P.';
    el.code.focus();
    return;
  }
  el.startStatus.textContent = 'Joining…';
  if (send(request.redeemCode(code)) !== null) el.join.disabled = true;
});

el.launchAccept.addEventListener('click', () => {
  if (session?.launch) send(request.answerLaunch(session.id, true));
});

el.launchDecline.addEventListener('click', () => {
  if (!session?.launch) return;
  send(request.answerLaunch(session.id, false));
  session = null;
  setPhase('idle');
  el.startStatus.textContent = 'You declined the request.';
});

el.allow.addEventListener('click', async () => {
  if (!session?.consentMode) return;
  el.allow.disabled = true;
  try {
    // getDisplayMedia needs this click (user activation); consent is sent only once something is chosen.
    await chooseWhatToShare();
  } catch (e) {
    el.allow.disabled = false;
    setStatus(e.name === 'NotAllowedError'
      ? 'Nothing was chosen, so nothing is shared. Press Allow to choose again, or Decline.'
      : `The screen could not be captured: ${e.message || e}`);
    return;
  }
  if (!session?.consentMode) {
    stopStream();
    return; // the request ended while the picker was open
  }
  send(request.consent(session.id, true));
  hideConsent();
  setStatus('Allowed. Starting…');
});

el.decline.addEventListener('click', () => {
  if (!session?.consentMode) return;
  send(request.consent(session.id, false));
  hideConsent();
  setStatus('You declined.');
});

el.end.addEventListener('click', () => {
  if (session) send(request.endSession(session.id));
});

el.chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = el.chatText.value.trim();
  if (!text || !session) return;
  if (send(request.chat(session.id, text)) !== null) {
    addChat('You', text, Date.now());
    el.chatText.value = '';
  }
});

window.addEventListener('beforeunload', () => {
  if (ws) ws.close(1000, 'page closed');
});

// ---------------------------------------------------------------------------------------------
// Start

setPhase('signedOut');
signIn(false);
