// A dedicated worker that only keeps time for the browser sharer's capture loop: browsers slow the
// timers of a hidden page (the person switched to the window they share) to about one a second,
// but not a worker's. Each message is a delay in milliseconds; the answer comes after it.
self.onmessage = (ev) => {
  const ms = Number(ev.data);
  setTimeout(() => self.postMessage(ms), Number.isFinite(ms) && ms > 0 ? ms : 0);
};
