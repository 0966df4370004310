// The client as a package: it loads as an ES module wherever it sits, and
// by its name through package.json's exports, from Node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');

// copyPackage copies what npm would publish (package.json's files) to dir.
function copyPackage(dir) {
  mkdirSync(dir, { recursive: true });
  for (const f of ['package.json', 'roomcast.js', 'roomcast.d.ts']) cpSync(join(web, f), join(dir, f));
}

const load = (cwd, specifier) =>
  execFileSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(specifier)}); console.log(typeof m.connect, typeof m.default.connect)`], {
    cwd,
    encoding: 'utf8',
  }).trim();

test('under a parent package.json with "type": "commonjs" the client still loads as an ES module', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'roomcast-commonjs-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'parent', type: 'commonjs' }));
  copyPackage(join(root, 'web'));
  assert.equal(load(root, './web/roomcast.js'), 'function function');
});

test('an app imports the client by its package name', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'roomcast-app-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'app', type: 'commonjs' }));
  const pkg = JSON.parse(execFileSync(process.execPath, ['-p', `JSON.stringify(require(${JSON.stringify(join(web, 'package.json'))}))`], { encoding: 'utf8' }));
  copyPackage(join(root, 'node_modules', ...pkg.name.split('/')));
  assert.equal(load(root, pkg.name), 'function function');
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.exports['.'].types, './roomcast.d.ts');
});
