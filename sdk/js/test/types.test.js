// index.d.ts is written by hand (no TypeScript compiler is available here):
// every value the package exports must be declared there, and every value
// declared there must exist, so the types cannot drift from the code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as sdk from '../src/index.js';

const declarations = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');

test('index.d.ts declares exactly the values src/index.js exports', () => {
  const declared = new Set(
    [...declarations.matchAll(/^export (?:declare )?(?:abstract )?(?:class|function|const|let|var) ([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]),
  );
  const exported = new Set(Object.keys(sdk));
  assert.ok(exported.size > 10, 'the package exports its API');
  assert.deepEqual([...exported].filter((name) => !declared.has(name)).sort(), [], 'exported but not declared');
  assert.deepEqual([...declared].filter((name) => !exported.has(name)).sort(), [], 'declared but not exported');
});

test('package.json points at the module and the declarations that exist', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.exports['.'].types, './index.d.ts');
  assert.equal(pkg.exports['.'].import, './src/index.js');
  assert.deepEqual(pkg.dependencies ?? {}, {}, 'no runtime dependencies');
  assert.deepEqual(pkg.devDependencies ?? {}, {}, 'no dev dependencies');
});
