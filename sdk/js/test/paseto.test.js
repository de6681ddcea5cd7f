// The PASETO v4.public layer: the official test vectors (when
// /work/shared/paseto is present, or TOLLGATE_PASETO_VECTORS names the
// directory), PAE, canonical base64url, and the token format's refusal codes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  pae, decodeToken, verifyToken, signToken, makePublicKey, publicKeyOfSeed,
} from '../src/paseto.js';
import { decodeBase64Url, isSmallOrder, isCurvePoint } from '../src/paseto.js';

const VECTORS_DIR = process.env.TOLLGATE_PASETO_VECTORS ?? '/work/shared/paseto';
const vectorsFile = join(VECTORS_DIR, 'v4.json');
const haveVectors = existsSync(vectorsFile);

test('official v4 test vectors (v4.public verify and sign, v4.local refused)', { skip: haveVectors ? false : `no ${vectorsFile}` }, () => {
  const { tests } = JSON.parse(readFileSync(vectorsFile, 'utf8'));
  let publicKeyHex = null;
  let ran = 0;
  for (const v of tests) {
    if (v['public-key']) publicKeyHex = v['public-key'];
  }
  assert.ok(publicKeyHex, 'the vectors carry a public key');
  for (const v of tests) {
    const implicit = Buffer.from(v['implicit-assertion'] ?? '', 'utf8');
    const footer = Buffer.from(v.footer ?? '', 'utf8');
    const pub = makePublicKey(Buffer.from(v['public-key'] ?? publicKeyHex, 'hex'));
    if (v['expect-fail']) {
      assert.throws(() => verifyToken(pub, v.token, { implicit }), (e) => e.code.startsWith('token_'), v.name);
      ran++;
      continue;
    }
    if (!v.token.startsWith('v4.public.')) {
      // v4.local (symmetric) is not a Tollgate format: refused by header.
      assert.throws(() => verifyToken(pub, v.token, { implicit }), { code: 'token_wrong_header' }, v.name);
      ran++;
      continue;
    }
    const { message, footer: got } = verifyToken(pub, v.token, { implicit, expectedFooter: footer });
    assert.equal(message.toString('utf8'), v.payload, v.name);
    assert.equal(got.toString('utf8'), v.footer, v.name);
    // Ed25519 is deterministic: signing gives the vector's token.
    const seed = Buffer.from(v['secret-key-seed'] ?? v['secret-key'].slice(0, 64), 'hex');
    assert.deepEqual(publicKeyOfSeed(seed), Buffer.from(v['public-key'], 'hex'), v.name);
    assert.equal(signToken(seed, Buffer.from(v.payload, 'utf8'), footer, implicit), v.token, v.name);
    // Another implicit assertion fails.
    assert.throws(() => verifyToken(pub, v.token, { implicit: Buffer.from('other') }), { code: 'token_bad_signature' }, v.name);
    ran++;
  }
  assert.equal(ran, tests.length);
});

test('PAE as the spec gives it', () => {
  assert.equal(pae([]).toString('hex'), '0000000000000000');
  assert.equal(pae([Buffer.alloc(0)]).toString('hex'), '01000000000000000000000000000000');
  assert.equal(pae([Buffer.from('test')]).toString('hex'), '0100000000000000040000000000000074657374');
});

test('base64url is canonical only', () => {
  assert.deepEqual(decodeBase64Url(''), Buffer.alloc(0));
  assert.deepEqual(decodeBase64Url('AQ'), Buffer.from([1]));
  assert.equal(decodeBase64Url('AR'), null, 'non-zero trailing bits');
  assert.equal(decodeBase64Url('AQ=='), null, 'padding');
  assert.equal(decodeBase64Url('A+/A'), null, 'standard alphabet');
  assert.equal(decodeBase64Url('A'), null, 'impossible length');
  assert.deepEqual(decodeBase64Url('AQI'), Buffer.from([1, 2]));
  assert.equal(decodeBase64Url('AQJ'), null);
});

test('small-order points and curve points', () => {
  const zero = Buffer.alloc(32);
  const one = Buffer.alloc(32); one[0] = 1;
  assert.ok(isSmallOrder(zero) && isSmallOrder(one));
  const order8 = Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex');
  assert.ok(isSmallOrder(order8) && isCurvePoint(order8));
  const pub = publicKeyOfSeed(Buffer.alloc(32, 7));
  assert.ok(!isSmallOrder(pub) && isCurvePoint(pub));
  // y = 2 is not on the curve.
  const two = Buffer.alloc(32); two[0] = 2;
  assert.ok(!isCurvePoint(two));
});

test('every format refusal has its code', () => {
  const seed = Buffer.alloc(32, 1);
  const good = signToken(seed, Buffer.from('{}'), Buffer.from('{"kid":"x"}'));
  const [, , payload, footer] = good.split('.');
  const cases = [
    ['', 'token_empty'],
    ['v4.public.' + 'A'.repeat(70000), 'token_too_long'],
    ['v4.local.' + payload, 'token_wrong_header'],
    ['V4.PUBLIC.' + payload, 'token_wrong_header'],
    [`v4.public.${payload}.${footer}.x`, 'token_malformed_too_many_sections'],
    [`v4.public.${payload}.`, 'token_malformed_empty_footer'],
    [`v4.public.${payload}=`, 'token_malformed_payload_encoding'],
    ['v4.public.AAAA', 'token_malformed_payload_too_short'],
    [`v4.public.${payload}.${footer}=`, 'token_malformed_footer_encoding'],
  ];
  for (const [token, code] of cases) {
    assert.throws(() => decodeToken(token), { code }, code);
  }
  const decoded = decodeToken(good);
  assert.equal(decoded.message.toString(), '{}');
  assert.equal(decoded.footer.toString(), '{"kid":"x"}');
  const pub = makePublicKey(publicKeyOfSeed(seed));
  assert.doesNotThrow(() => verifyToken(pub, good));
  assert.throws(() => verifyToken(pub, good, { expectedFooter: Buffer.from('{}') }), { code: 'token_footer_mismatch' });
  const other = makePublicKey(publicKeyOfSeed(Buffer.alloc(32, 2)));
  assert.throws(() => verifyToken(other, good), { code: 'token_bad_signature' });
});
