// The shared screen on a canvas: screen frames (docs/protocol.md, "Screen and input payloads")
// are parsed, their tiles decoded with createImageBitmap and drawn at their place. Tiles of one
// frame are drawn in order, frames in the order they came; a keyframe makes the frames queued
// before it useless, so they are skipped.

import { parseScreenFrame } from './proto.mjs';

export class ScreenView {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {(view: ScreenView) => void} onFrame called after each frame is drawn or ignored
   */
  constructor(canvas, onFrame = () => {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.onFrame = onFrame;
    this.queue = [];
    this.busy = false;
    this.generation = 0;
    this.width = 0;
    this.height = 0;
    this.stats = { shown: 0, ignored: 0, skipped: 0 };
    this.lastError = '';
  }

  /** Forgets the picture and anything queued (a new session). */
  reset() {
    this.generation++;
    this.queue = [];
    this.width = 0;
    this.height = 0;
    this.stats = { shown: 0, ignored: 0, skipped: 0 };
    this.lastError = '';
    this.canvas.width = 0;
    this.canvas.height = 0;
  }

  /** Queues one screen frame payload (channel 1). */
  push(payload, keyframe) {
    if (keyframe) {
      this.stats.skipped += this.queue.length;
      this.queue = [];
    }
    this.queue.push({ payload, keyframe });
    if (!this.busy) this.pump();
  }

  async pump() {
    this.busy = true;
    try {
      while (this.queue.length > 0) {
        const frame = this.queue.shift();
        await this.draw(frame, this.generation);
        this.onFrame(this);
      }
    } finally {
      this.busy = false;
    }
  }

  async draw(frame, generation) {
    let parsed;
    try {
      parsed = parseScreenFrame(frame.payload);
    } catch (e) {
      this.ignore(e);
      return;
    }
    let bitmaps;
    try {
      bitmaps = await Promise.all(
        parsed.tiles.map((t) => createImageBitmap(new Blob([t.data], { type: t.type }))),
      );
    } catch (e) {
      this.ignore(new Error(`a tile could not be decoded (${e.message || e})`));
      return;
    }
    try {
      if (generation !== this.generation) return;
      for (let i = 0; i < bitmaps.length; i++) {
        const b = bitmaps[i];
        const t = parsed.tiles[i];
        if (b.width !== t.width || b.height !== t.height) {
          this.ignore(new Error(`tile ${i} is ${b.width}×${b.height}, not ${t.width}×${t.height}`));
          return;
        }
      }
      if (parsed.width !== this.width || parsed.height !== this.height) {
        // Setting the size clears the canvas; a keyframe repaints all of it.
        this.width = parsed.width;
        this.height = parsed.height;
        this.canvas.width = parsed.width;
        this.canvas.height = parsed.height;
      }
      for (let i = 0; i < bitmaps.length; i++) {
        const t = parsed.tiles[i];
        this.ctx.drawImage(bitmaps[i], t.x, t.y);
      }
      this.stats.shown++;
    } finally {
      for (const b of bitmaps) b.close();
    }
  }

  ignore(e) {
    this.stats.ignored++;
    this.lastError = e.message || String(e);
    console.warn('screen frame ignored:', this.lastError);
  }
}
