// The browser helper: signs in (OpenID Connect, /assets/auth.mjs), asks the broker for a code or a device
// session over /v1/signal, shows the sharer's profile, asks for modes, and once a session is
// active shows the screen from the relay (/v1/relay) and sends pointer and keyboard input.
// Protocols: docs/protocol.md. How to use it: docs/clients.md ("Browser helper").

import {
  CHANNEL, MODE_LABELS, canControl, closeText, encodeRelayFrame, endedText, errorText,
  formatCode, input, parseControl, parseRelayFrame, pointerButton, scaleToScreen, screenToBox,
  warningText, WheelAccumulator,
} from './proto.mjs';
import { ScreenView } from './screen.js';
import { signIn } from '/assets/auth.mjs';
import { SignalConnection, signalUrl } from '/assets/signal.mjs';

const $ = (id) => document.getElementById(id);
const el = {
  connStatus: $('conn-status'), error: $('error'),
  signin: $('signin'), signinInfo: $('signin-info'), connect: $('connect'), signout: $('signout'),
  start: $('start'), getCode: $('get-code'), launchForm: $('launch-form'), deviceId: $('device-id'),
  helpDevice: $('help-device'), codeBox: $('code-box'), code: $('code'), codeExpiry: $('code-expiry'),
  startStatus: $('start-status'), cancel: $('cancel'),
  session: $('session'), peerName: $('peer-name'), peerJob: $('peer-job'),
  peerCompany: $('peer-company'), peerDomain: $('peer-domain'),
  modeForm: $('mode-form'), mode: $('mode'), requestMode: $('request-mode'), currentMode: $('current-mode'),
  warnings: $('warnings'), warningsTitle: $('warnings-title'), warningList: $('warning-list'),
  ackWarnings: $('ack-warnings'), sessionStatus: $('session-status'), end: $('end'),
  chatLog: $('chat-log'), chatForm: $('chat-form'), chatText: $('chat-text'), chatSend: $('chat-send'),
  screenStatus: $('screen-status'), canvas: $('screen'), screenHint: $('screen-hint'),
  screenStats: $('screen-stats'),
  screenArea: $('screen-area'), screenBox: $('screen-box'), remotePointer: $('remote-pointer'),
  scaleFit: $('scale-fit'), scaleActual: $('scale-actual'), fullscreen: $('fullscreen'),
};

// ---------------------------------------------------------------------------------------------
// State

let signal = null; // the SignalConnection (/assets/signal.mjs) to /v1/signal
let auth = null; // the signed-in session (auth.mjs): tokens in memory only
/** The session this page takes part in, or null. */
let session = null;
let relay = null; // the RelayLeg of the active session

const screen = new ScreenView(el.canvas, updateScreenStats);

function newSession(fields) {
  return {
    id: fields.sessionId, phase: fields.phase, peer: null, mode: null, chat: false,
    requested: null, warnings: [], ...fields,
  };
}

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
  show(el.signin, phase !== 'joined' && phase !== 'active');
  show(el.start, phase === 'idle' || phase === 'code' || phase === 'launch');
  show(el.session, phase === 'joined' || phase === 'active');
  show(el.codeBox, phase === 'code');
  show(el.cancel, phase === 'code' || phase === 'launch');
  el.getCode.disabled = phase !== 'idle';
  el.helpDevice.disabled = phase !== 'idle';
  el.deviceId.disabled = phase !== 'idle';
}

function peerLabel() {
  return session?.peer?.displayName || 'the user';
}

function modeLabel(mode) {
  return MODE_LABELS[mode] ?? mode;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

// ---------------------------------------------------------------------------------------------
// Signalling

function send(msg) {
  const id = signal ? signal.send(msg) : null;
  if (id === null) showError('Not connected to the server. Connect again.');
  return id;
}

function connect(token) {
  disconnect();
  showError('');
  el.connStatus.textContent = 'Connecting…';
  try {
    signal = new SignalConnection({
      url: signalUrl(location.host),
      token,
      onOpen: () => { el.connStatus.textContent = 'Signing in…'; },
      onSignedIn,
      onMessage: onSignal,
      onClose: onSignalClosed,
    });
  } catch (e) {
    el.connStatus.textContent = 'Not connected';
    showError(`Could not open the connection: ${e.message}`);
  }
}

function onSignalClosed(ev, wasSignedIn) {
  signal = null;
  el.connStatus.textContent = 'Not connected';
  const lost = session ? ' The session ended with it.' : '';
  endSessionLocally();
  setPhase('signedOut');
  showSignin(false);
  if (ev.code !== 1000 || !wasSignedIn) showError(closeText('signal', ev.code, ev.reason) + lost);
}

function disconnect() {
  if (signal) {
    const s = signal;
    signal = null;
    s.close(1000, 'signed out');
  }
  endSessionLocally();
}

function showSignin(connected) {
  show(el.connect, !connected);
  el.connect.textContent = auth ? 'Connect' : 'Sign in';
  show(el.signout, Boolean(auth));
  el.signinInfo.textContent = auth
    ? `Signed in as ${auth.user.name}${auth.user.upn && auth.user.upn !== auth.user.name ? ` (${auth.user.upn})` : ''}` +
      `${auth.user.tenantId ? `, tenant ${auth.user.tenantId}` : ''}.`
    : 'Sign in with your organisation\'s account to help someone.';
}

/** A refreshed token goes to the open connection before the old one expires (else 4401). */
function reauthenticate(token) {
  signal?.authenticate(token);
}

/** Connects with a fresh token of the signed-in session. */
async function connectSignedIn() {
  try {
    connect(await auth.accessToken());
  } catch (e) {
    showError(`${e.message}`);
    auth = null;
    showSignin(false);
  }
}

/** The first pong came back: the server accepted the token. */
function onSignedIn() {
  el.connStatus.textContent = `Connected${auth ? ` as ${auth.user.name || auth.user.upn}` : ''}`;
  showSignin(true);
  if (!session) setPhase('idle');
  el.getCode.focus();
}

function onSignal(msg, req) {
  switch (msg.type) {
    case 'codeIssued':
      session = newSession({ sessionId: msg.sessionId, phase: 'code' });
      el.code.textContent = formatCode(msg.code);
      el.codeExpiry.textContent = `Valid until ${time(msg.expiresAt)}.`;
      el.startStatus.textContent = 'Waiting for the person to enter the code…';
      setPhase('code');
      break;
    case 'launchPending':
      session = newSession({ sessionId: msg.sessionId, phase: 'launch', deviceId: msg.deviceId });
      el.startStatus.textContent = `Waiting for device ${msg.deviceId} to accept (until ${time(msg.expiresAt)})…`;
      setPhase('launch');
      break;
    case 'sessionJoined':
      onJoined(msg);
      break;
    case 'warnings':
      onWarnings(msg);
      break;
    case 'modeRequested':
      onModeRequested(msg);
      break;
    case 'consentDeclined':
      if (session) {
        session.requested = null;
        setStatus(`${peerLabel()} declined ${modeLabel(msg.mode)}.` +
          (session.mode ? ` The session goes on in ${modeLabel(session.mode)}.` : ''));
        updateModeUi();
      }
      break;
    case 'consentTimedOut':
      if (session) {
        session.requested = null;
        setStatus(`${peerLabel()} did not answer the request for ${modeLabel(msg.mode)} in time.` +
          (session.mode ? ` The session goes on in ${modeLabel(session.mode)}.` : ''));
        updateModeUi();
      }
      break;
    case 'sessionActive':
      onActive(msg);
      break;
    case 'modeChanged':
      if (session) {
        session.requested = null;
        setMode(msg.mode, msg.chat);
        setStatus(`Mode is now ${modeLabel(msg.mode)}.`);
      }
      break;
    case 'chat':
      addChat(msg.from === 'helper' ? 'You' : peerLabel(), msg.text, msg.at);
      break;
    case 'sessionEnded':
      if (session && msg.sessionId === session.id) {
        const text = endedText(msg.reason, msg.by);
        endSessionLocally();
        setPhase('idle');
        el.startStatus.textContent = text;
        el.getCode.focus();
      }
      break;
    case 'error':
      onError(msg, req);
      break;
    default:
      break; // ack, and events this page does not use
  }
}

function onJoined(msg) {
  if (!session || session.id !== msg.sessionId) session = newSession({ sessionId: msg.sessionId });
  session.phase = 'joined';
  session.peer = msg.peerProfile || {};
  const p = session.peer;
  el.peerName.textContent = p.displayName || '(no name)';
  el.peerJob.textContent = p.jobTitle || '—';
  el.peerCompany.textContent = p.companyName || '—';
  if (p.verifiedDomain) {
    el.peerDomain.textContent = `${p.verifiedDomain} (verified)`;
    el.peerDomain.className = 'verified';
  } else {
    el.peerDomain.textContent = 'domain NOT verified: make sure this is the person you expect';
    el.peerDomain.className = 'unverified';
  }
  el.chatLog.replaceChildren();
  el.canvas.setAttribute('aria-label', `The shared screen of ${peerLabel()}`);
  screen.reset();
  forgetPointer();
  setMode(null, false);
  setPhase('joined');
  setStatus(`${peerLabel()} joined. Choose a mode and press Request.`);
  el.screenStatus.textContent = 'No screen yet: it appears once a mode is granted.';
  el.mode.focus();
}

function onWarnings(msg) {
  if (!session) return;
  session.warnings = msg.warnings || [];
  session.warningMode = msg.mode;
  el.warningsTitle.textContent = `The policy allows ${modeLabel(msg.mode)} with these warnings:`;
  el.warningList.replaceChildren(...session.warnings.map((w) => {
    const li = document.createElement('li');
    li.textContent = warningText(w);
    return li;
  }));
  show(el.warnings, true);
  el.ackWarnings.focus();
}

function onModeRequested(msg) {
  if (!session) return;
  session.requested = msg.mode;
  const who = peerLabel();
  if (msg.consent === 'required') {
    setStatus(`Waiting for ${who} to allow ${modeLabel(msg.mode)}` +
      (msg.expiresAt ? ` (until ${time(msg.expiresAt)})…` : '…'));
  } else if (msg.consent === 'declineWindow') {
    setStatus(`${modeLabel(msg.mode)} starts ${msg.expiresAt ? `at ${time(msg.expiresAt)} ` : ''}unless ${who} declines.`);
  } else {
    setStatus(`Starting ${modeLabel(msg.mode)}…`);
  }
  updateModeUi();
}

function onActive(msg) {
  if (!session) session = newSession({ sessionId: msg.sessionId });
  session.phase = 'active';
  session.requested = null;
  setMode(msg.mode, msg.chat);
  setPhase('active');
  setStatus(`Session active in ${modeLabel(msg.mode)}.`);
  if (relay) relay.close();
  screen.reset();
  forgetPointer();
  relay = new RelayLeg(msg.relay, session.id);
}

function onError(msg, req) {
  if (msg.code === 'warningNotAcknowledged') {
    // The `warnings` event lists them; the helper acknowledges them or picks another mode.
    if (session) session.requested = null;
    updateModeUi();
    setStatus('Acknowledge the warnings to continue, or choose another mode.');
    return;
  }
  const text = errorText(msg.code, msg.message);
  if (req && (req.type === 'requestMode')) {
    if (session) session.requested = null;
    updateModeUi();
    setStatus(`${modeLabel(req.mode)} was not granted: ${text}`);
    return;
  }
  if (req && req.type === 'chat') {
    addChat('Not sent', `${req.text} — ${text}`);
    return;
  }
  if (req && (req.type === 'requestCode' || req.type === 'requestSession')) {
    session = null;
    setPhase('idle');
    el.startStatus.textContent = text;
    return;
  }
  showError(text);
}

function setStatus(text) {
  el.sessionStatus.textContent = text;
}

function setMode(mode, chat) {
  if (!session) return;
  session.mode = mode;
  session.chat = Boolean(chat);
  document.body.dataset.mode = mode || '';
  updateModeUi();
}

function updateModeUi() {
  if (!session) return;
  const mode = session.mode;
  el.currentMode.textContent = mode ? modeLabel(mode) : 'none yet';
  // The selector keeps the helper's choice: a grant never moves it to the next mode up, so
  // pressing Request again cannot escalate. Asking for the mode already granted is pointless.
  el.requestMode.disabled = Boolean(session.requested) || (Boolean(mode) && el.mode.value === mode);
  el.chatText.disabled = !session.chat;
  el.chatSend.disabled = !session.chat;
  el.chatText.placeholder = session.chat ? 'Message' : 'Chat is not available';
  if (!canControl(mode)) releaseAll();
  updateScreenHint();
}

function requestMode(acknowledge) {
  if (!session) return;
  const mode = acknowledge ? session.warningMode : el.mode.value;
  show(el.warnings, false);
  session.requested = mode;
  updateModeUi();
  setStatus(`Asking for ${modeLabel(mode)}…`);
  const id = send({
    type: 'requestMode', sessionId: session.id, mode,
    acknowledgeWarnings: acknowledge ? session.warnings : [],
  });
  if (id === null) {
    session.requested = null;
    updateModeUi();
  }
}

function endSessionLocally() {
  releaseAll();
  if (relay) {
    relay.close();
    relay = null;
  }
  screen.reset(); // nothing of the sharer's screen stays on the page
  forgetPointer();
  session = null;
  document.body.dataset.mode = '';
  document.body.dataset.relayMode = '';
  show(el.warnings, false);
}

function addChat(who, text, at) {
  const p = document.createElement('p');
  const b = document.createElement('strong');
  b.textContent = `${who}${at ? ` (${time(at)})` : ''}: `;
  p.append(b, document.createTextNode(text));
  el.chatLog.append(p);
  el.chatLog.scrollTop = el.chatLog.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Relay

class RelayLeg {
  constructor(info, sessionId) {
    this.sessionId = sessionId;
    this.closed = false;
    this.mode = null;
    el.screenStatus.textContent = 'Connecting to the screen relay…';
    const url = `${info.wssUrl}?ticket=${encodeURIComponent(info.ticket)}`;
    try {
      this.ws = new WebSocket(url);
    } catch (e) {
      el.screenStatus.textContent = `Could not connect to the relay: ${e.message}`;
      this.closed = true;
      return;
    }
    this.ws.binaryType = 'arraybuffer';
    this.ws.onmessage = (ev) => this.onMessage(ev);
    this.ws.onclose = (ev) => this.onClose(ev);
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
    if (frame.channel === CHANNEL.screen) {
      screen.push(frame.payload, frame.keyframe);
    } else if (frame.channel === CHANNEL.control) {
      const c = parseControl(frame.payload);
      if (c) this.onControl(c);
    } else if (frame.channel === CHANNEL.chat) {
      addChat(peerLabel(), new TextDecoder().decode(frame.payload));
    }
  }

  onControl(c) {
    switch (c.type) {
      case 'joined':
        el.screenStatus.textContent = `Waiting for ${peerLabel()}’s app to send the screen…`;
        break;
      case 'paired':
      case 'modeChanged':
        if (c.type === 'paired') el.screenStatus.textContent = 'Connected; waiting for the first picture…';
        // What the relay lets through now (tests wait for it before sending input).
        document.body.dataset.relayMode = c.mode || '';
        if (session && c.mode) setMode(c.mode, c.chat ?? session.chat);
        break;
      case 'pointer': // the sharer's pointer position (docs/protocol.md, "Screen and input payloads")
        showPointer(c.x, c.y);
        break;
      case 'ended':
        el.screenStatus.textContent = `The screen connection ended${c.reason ? ` (${c.reason})` : ''}.`;
        break;
      default:
        break; // keyframeRequest is for the sharer; unknown types are ignored
    }
  }

  onClose(ev) {
    if (this.closed) return;
    this.closed = true;
    releaseAll();
    if (relay === this) {
      el.screenStatus.textContent = closeText('relay', ev.code, ev.reason);
    }
  }

  send(text) {
    if (!this.closed && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(encodeRelayFrame(CHANNEL.input, text));
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.ws.close(1000, 'helper left');
    } catch {
      // already closing
    }
  }
}

function updateScreenStats(view) {
  const s = view.stats;
  if (s.shown > 0 && view.width) {
    el.screenStatus.textContent = `Showing ${peerLabel()}’s screen (${view.width}×${view.height}).`;
  }
  el.screenStats.textContent = `Frames shown: ${s.shown}` +
    (s.ignored ? `, ignored: ${s.ignored} (${view.lastError})` : '') +
    (s.skipped ? `, skipped: ${s.skipped}` : '');
  el.canvas.dataset.frames = String(s.shown);
  placePointer(); // the screen size may have changed
}

// ---------------------------------------------------------------------------------------------
// Screen size (fit, 1:1, full screen) and the sharer's pointer

let remotePointer = null; // {x, y} in screen pixels, as the sharer last sent it

function forgetPointer() {
  remotePointer = null;
  placePointer();
}

function showPointer(x, y) {
  remotePointer = { x, y };
  placePointer();
}

function placePointer() {
  const p = remotePointer;
  const at = p && screenToBox(p.x, p.y, screen.width, screen.height, el.canvas.clientWidth, el.canvas.clientHeight);
  if (!at) {
    el.remotePointer.hidden = true;
    return;
  }
  el.remotePointer.style.left = `${el.canvas.offsetLeft + el.canvas.clientLeft + at.x}px`;
  el.remotePointer.style.top = `${el.canvas.offsetTop + el.canvas.clientTop + at.y}px`;
  el.remotePointer.dataset.x = String(p.x);
  el.remotePointer.dataset.y = String(p.y);
  el.remotePointer.hidden = false;
}

function setScale(actual) {
  el.screenBox.classList.toggle('actual', actual);
  el.scaleFit.setAttribute('aria-pressed', String(!actual));
  el.scaleActual.setAttribute('aria-pressed', String(actual));
  placePointer();
}

el.scaleFit.addEventListener('click', () => setScale(false));
el.scaleActual.addEventListener('click', () => setScale(true));
el.fullscreen.addEventListener('click', () => {
  const done = document.fullscreenElement
    ? document.exitFullscreen()
    : el.screenArea.requestFullscreen();
  done.catch((e) => { el.screenStatus.textContent = `Full screen is not available: ${e.message}`; });
  el.canvas.focus();
});
document.addEventListener('fullscreenchange', () => {
  el.fullscreen.textContent = document.fullscreenElement ? 'Exit full screen' : 'Full screen';
  placePointer();
});
window.addEventListener('resize', placePointer);

// ---------------------------------------------------------------------------------------------
// Input: only while the mode is fullControl or higher, and only over the canvas.

function controlling() {
  return Boolean(session && relay && !relay.closed && canControl(session.mode) && screen.width > 0);
}

function updateScreenHint() {
  const mode = session?.mode;
  el.screenHint.textContent = !mode ? ''
    : canControl(mode)
      ? 'You have control: click the screen to use it. Keys typed while it has focus go to the user’s computer; press Shift+Escape to leave it.'
      : 'View only: your clicks and keys are not sent.';
  el.canvas.classList.toggle('control', Boolean(session && canControl(session.mode)));
}

function toScreen(ev) {
  return scaleToScreen(ev.clientX, ev.clientY, el.canvas.getBoundingClientRect(), screen.width, screen.height);
}

let moveAt = null; // the latest pointer position not yet sent
let moveFrame = 0;
const heldButtons = new Set();
const heldKeys = new Map(); // KeyboardEvent.code -> the key value sent with its keydown
const wheel = new WheelAccumulator();

function flushMove() {
  moveFrame = 0;
  if (moveAt && controlling()) relay.send(input.pointerMove(moveAt.x, moveAt.y));
  moveAt = null;
}

function releaseAll() {
  if (relay && !relay.closed) {
    for (const [, key] of heldKeys) relay.send(input.key(key, false));
    const last = moveAt || { x: 0, y: 0 };
    for (const b of heldButtons) relay.send(input.pointerButton(last.x, last.y, b, false));
  }
  heldKeys.clear();
  heldButtons.clear();
}

el.canvas.addEventListener('pointermove', (ev) => {
  if (!controlling()) return;
  moveAt = toScreen(ev);
  if (!moveFrame) moveFrame = requestAnimationFrame(flushMove);
});

el.canvas.addEventListener('pointerdown', (ev) => {
  el.canvas.focus();
  if (!controlling()) return;
  ev.preventDefault();
  const button = pointerButton(ev.button);
  if (button === null) return;
  try {
    el.canvas.setPointerCapture(ev.pointerId);
  } catch {
    // not a capturable pointer
  }
  const p = toScreen(ev);
  moveAt = null;
  heldButtons.add(button);
  relay.send(input.pointerButton(p.x, p.y, button, true));
});

el.canvas.addEventListener('pointerup', (ev) => {
  const button = pointerButton(ev.button);
  if (button === null || !heldButtons.has(button)) return;
  heldButtons.delete(button);
  if (!controlling()) return;
  ev.preventDefault();
  const p = toScreen(ev);
  moveAt = null;
  relay.send(input.pointerButton(p.x, p.y, button, false));
});

el.canvas.addEventListener('contextmenu', (ev) => {
  if (controlling()) ev.preventDefault();
});

el.canvas.addEventListener('wheel', (ev) => {
  if (!controlling()) return;
  ev.preventDefault();
  const { dx, dy } = wheel.add(ev.deltaX, ev.deltaY, ev.deltaMode);
  if (dx || dy) {
    const p = toScreen(ev);
    relay.send(input.wheel(p.x, p.y, dx, dy));
  }
}, { passive: false });

el.canvas.addEventListener('keydown', (ev) => {
  if (!controlling() || ev.isComposing) return;
  if (ev.key === 'Escape' && ev.shiftKey) {
    // The way out for keyboard users: nothing is sent, focus moves on.
    releaseAll();
    (el.chatText.disabled ? el.end : el.chatText).focus();
    ev.preventDefault();
    return;
  }
  ev.preventDefault();
  heldKeys.set(ev.code || ev.key, ev.key);
  relay.send(input.key(ev.key, true));
});

el.canvas.addEventListener('keyup', (ev) => {
  const id = ev.code || ev.key;
  if (!heldKeys.has(id)) return;
  const key = heldKeys.get(id);
  heldKeys.delete(id);
  if (!controlling()) return;
  ev.preventDefault();
  relay.send(input.key(key, false));
});

el.canvas.addEventListener('blur', releaseAll);

// ---------------------------------------------------------------------------------------------
// Buttons and forms

el.connect.addEventListener('click', () => {
  if (auth) {
    connectSignedIn();
  } else {
    el.connStatus.textContent = 'Signing in…';
    beginSignIn(); // redirects to the sign-in page
  }
});

el.signout.addEventListener('click', async () => {
  disconnect();
  const a = auth;
  auth = null;
  setPhase('signedOut');
  showSignin(false);
  el.connStatus.textContent = 'Signed out';
  if (a) await a.signOut();
  el.connect.focus();
});

el.getCode.addEventListener('click', () => {
  el.startStatus.textContent = 'Asking for a code…';
  if (send({ type: 'requestCode' }) !== null) el.getCode.disabled = true;
});

el.launchForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const deviceId = el.deviceId.value.trim();
  if (!deviceId) return;
  el.startStatus.textContent = `Asking device ${deviceId}…`;
  if (send({ type: 'requestSession', deviceId }) !== null) el.helpDevice.disabled = true;
});

function endSession() {
  if (session) send({ type: 'endSession', sessionId: session.id });
}

el.cancel.addEventListener('click', endSession);
el.end.addEventListener('click', endSession);

el.mode.addEventListener('change', updateModeUi);
el.modeForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  requestMode(false);
});

el.ackWarnings.addEventListener('click', () => requestMode(true));

el.chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = el.chatText.value.trim();
  if (!text || !session) return;
  if (send({ type: 'chat', sessionId: session.id, text }) !== null) {
    addChat('You', text, Date.now());
    el.chatText.value = '';
  }
});

window.addEventListener('beforeunload', () => {
  signal?.close(1000, 'page closed');
});

// ---------------------------------------------------------------------------------------------
// Start

setPhase('signedOut');
updateScreenHint();
showSignin(false);

/** Signs in (completing a sign-in that just came back, or going to the sign-in page) and connects. */
async function beginSignIn() {
  try {
    auth = await signIn();
  } catch (e) {
    el.connStatus.textContent = 'Not signed in';
    showError(e.message);
    showSignin(false);
    el.connect.focus();
    return;
  }
  auth.onTokenRefreshed(reauthenticate);
  showSignin(false);
  await connectSignedIn();
}

beginSignIn();
