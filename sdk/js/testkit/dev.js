// Starting `tollgate dev` for the integration tests, and the little the
// tests need besides the SDK: the origin's REST API and one gRPC call (a
// region-signed license comes only from a region node's gRPC Licenses
// service).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import https from 'node:https';
import http from 'node:http';
import http2 from 'node:http2';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** The binary: TOLLGATE_BIN, else <repo>/target/debug/tollgate, built once if missing. */
export function tollgateBinary() {
  if (process.env.TOLLGATE_BIN) return { bin: process.env.TOLLGATE_BIN };
  const bin = join(REPO, 'target', 'debug', 'tollgate');
  if (existsSync(bin)) return { bin };
  const cargo = spawnSync('cargo', ['build', '-p', 'tollgate'], { cwd: REPO, stdio: 'inherit', timeout: 40 * 60_000 });
  if (cargo.status !== 0 || !existsSync(bin)) {
    return { bin: null, why: `no tollgate binary (set TOLLGATE_BIN, or build it: cargo build -p tollgate; the build said ${cargo.status ?? cargo.error})` };
  }
  return { bin };
}

/**
 * Polls `probe` until it returns a value (not undefined), or throws at the
 * deadline.
 * @template T
 * @param {string} what @param {() => T|undefined|Promise<T|undefined>} probe @param {number} timeoutMs
 * @returns {Promise<T>}
 */
export async function waitUntil(what, probe, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Starts `tollgate dev --base-port 0 --data-dir <tmp>`, waits for
 * endpoints.json; returns what the tests need and `stop()`.
 */
export async function startDev(bin, { readyTimeoutMs = 180_000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-js-sdk-'));
  const logPath = join(dir, 'dev.log');
  const log = openSync(logPath, 'a');
  const child = spawn(bin, ['dev', '--base-port', '0', '--data-dir', dir], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  closeSync(log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const killNow = () => {
    if (exited === null) {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
    }
  };
  process.on('exit', killNow);
  const stop = async () => {
    process.off('exit', killNow);
    if (exited === null) {
      child.kill('SIGTERM');
      try {
        await waitUntil('tollgate dev to stop', () => (exited !== null ? true : undefined), 15_000);
      } catch {
        child.kill('SIGKILL');
        await waitUntil('tollgate dev to die', () => (exited !== null ? true : undefined), 5_000).catch(() => {});
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const endpoints = await waitUntil('endpoints.json', () => {
      if (exited !== null) {
        throw Object.assign(new Error(`tollgate dev exited (${JSON.stringify(exited)}): ${tail(logPath)}`), { fatal: true });
      }
      const p = join(dir, 'endpoints.json');
      return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : undefined;
    }, readyTimeoutMs, 200);
    const ca = endpoints.tls?.ca ? readFileSync(endpoints.tls.ca) : null;
    const credential = readFileSync(endpoints.origin.app_credential_file, 'utf8').trim();
    const adminKey = readFileSync(endpoints.origin.admin_api_key_file, 'utf8').trim();
    const regions = Object.fromEntries(endpoints.regions.map((r) => [r.name, r.nodes.map((n) => n.check)]));
    return { dir, endpoints, ca, credential, adminKey, regions, stop, logPath, pid: child.pid };
  } catch (e) {
    await stop();
    throw e;
  }
}

function tail(path) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}

/**
 * One JSON request (the origin's REST API, a probe).
 * @returns {Promise<{status: number, json: any, text: string}>}
 */
export function requestJson(url, { method = 'GET', body, headers = {}, ca } = {}) {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = mod.request(u, {
      method,
      ca: ca ?? undefined,
      headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}), ...headers },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${url}: no answer in 15 s`)));
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}

// ---- A minimal unary gRPC call (protobuf by hand) ----

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}

/** A protobuf message of string fields: {fieldNumber: string}. */
function encodeStrings(fields) {
  const parts = [];
  for (const [num, value] of Object.entries(fields)) {
    if (value == null || value === '') continue;
    const bytes = Buffer.from(String(value), 'utf8');
    parts.push(varint((Number(num) << 3) | 2), varint(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

/** Decodes a protobuf message into {fieldNumber: value} (strings as Buffers, varints as BigInt). */
function decodeMessage(buf) {
  const out = {};
  let i = 0;
  const readVarint = () => {
    let shift = 0n;
    let v = 0n;
    for (;;) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(readVarint());
    const field = key >> 3;
    const wire = key & 7;
    if (wire === 0) out[field] = readVarint();
    else if (wire === 2) {
      const len = Number(readVarint());
      out[field] = buf.subarray(i, i + len);
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`protobuf wire type ${wire}`);
  }
  return out;
}

/**
 * `tollgate.license.v1.Licenses/IssueLicense` at a region node: a token
 * signed with the region's certified key.
 */
export function issueRegionLicense(nodeUrl, { ca, credential, account, audience, subject }) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(nodeUrl, { ca: ca ?? undefined });
    session.on('error', reject);
    const message = encodeStrings({ 1: account, 2: subject, 3: audience });
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/tollgate.license.v1.Licenses/IssueLicense',
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${credential}`,
    });
    const chunks = [];
    let status = null;
    let grpcMessage = '';
    stream.on('response', (headers) => {
      if (headers['grpc-status'] != null) {
        status = Number(headers['grpc-status']);
        grpcMessage = headers['grpc-message'] ?? '';
      }
    });
    stream.on('trailers', (trailers) => {
      status = Number(trailers['grpc-status']);
      grpcMessage = trailers['grpc-message'] ?? '';
    });
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      session.close();
      if (status !== 0) {
        reject(new Error(`IssueLicense: grpc-status ${status}: ${decodeURIComponent(grpcMessage)}`));
        return;
      }
      const body = Buffer.concat(chunks);
      const len = body.readUInt32BE(1);
      const fields = decodeMessage(body.subarray(5, 5 + len));
      resolve({
        id: fields[1]?.toString('utf8'),
        token: fields[2]?.toString('utf8'),
        kid: fields[3]?.toString('utf8'),
        issuer: fields[4]?.toString('utf8'),
      });
    });
    stream.on('error', (e) => {
      session.close();
      reject(e);
    });
    stream.end(frame);
  });
}
