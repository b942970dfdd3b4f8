// A test's own assistd: `assistd serve` on free loopback ports with a TOML config in a fresh
// temporary directory, with the demo tenant set up (scripts/demo-tenant.sh), for tests that need
// settings the shared server of run.sh does not have (short token lifetimes, …).
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Starts assistd (`bin`: the target/debug directory) with `config`, sets up the demo tenant and
 * resolves `{url, data, logs(), stop()}`.
 */
export async function startDemoServer({ bin, config = '' }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'assist-e2e-own-'));
  const data = path.join(dir, 'data');
  const cfg = path.join(dir, 'assist.toml');
  fs.writeFileSync(cfg, config);
  const assistd = path.join(bin, 'assistd');
  const child = spawn(assistd, ['serve', '--config', cfg, '--data-dir', data, '--listen', '127.0.0.1:0',
    '--quic-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--log', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => { out.stdout += d; });
  child.stderr.on('data', (d) => { out.stderr += d; });
  const stop = () => {
    child.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`assistd did not start in 30 s: ${out.stderr}`)), 30_000);
      const look = () => {
        const m = /serving https:\/\/[0-9.]+:(\d+)/.exec(out.stdout);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      };
      child.stdout.on('data', look);
      child.once('exit', (code) => reject(new Error(`assistd exited (${code}): ${out.stderr}`)));
    });
    const url = `https://localhost:${port}`;
    await new Promise((resolve, reject) => {
      execFile('bash', [path.join(ROOT, 'scripts/demo-tenant.sh'), data, url], { env: { ...process.env, ASSISTD: assistd } },
        (e, _stdout, stderr) => (e ? reject(new Error(`demo-tenant.sh failed: ${stderr}`)) : resolve()));
    });
    return { url, data, logs: () => out.stderr, stop };
  } catch (e) {
    stop();
    throw e;
  }
}
