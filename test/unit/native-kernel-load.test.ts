import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { AbacusError } from '../../common/errors';
import { loadNativeKernel, NATIVE_KERNEL_ENV, nativeKernelPath } from '../../worker/native/kernel';

// The native counting kernel is built by scripts/build-native.sh (run by ensure-ready, so by
// `npm test`): a missing build is a failure here, not a skip.

function withKernelPath<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env[NATIVE_KERNEL_ENV];
  if (value === undefined) delete process.env[NATIVE_KERNEL_ENV];
  else process.env[NATIVE_KERNEL_ENV] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env[NATIVE_KERNEL_ENV];
    else process.env[NATIVE_KERNEL_ENV] = saved;
  }
}

function isKernelError(code: string, path: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AbacusError, `expected an AbacusError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.ok(err.message.includes(path), `the message names ${path}: ${err.message}`);
    assert.match(err.fix, /bash scripts\/build-native\.sh/);
    assert.match(err.fix, /cargo/);
    return true;
  };
}

test('the kernel built by scripts/build-native.sh loads from dist/native', () => {
  withKernelPath(undefined, () => {
    // This file runs as dist/test/unit/*.js; the kernel is dist/native/abacus-kernel.node.
    assert.equal(nativeKernelPath(), resolve(__dirname, '..', '..', 'native', 'abacus-kernel.node'));
    const kernel = loadNativeKernel();
    assert.equal(typeof kernel.CountKernel, 'function');
    assert.equal(loadNativeKernel(), kernel, 'loaded once');
  });
});

test(`${NATIVE_KERNEL_ENV} naming a missing file gives an AbacusError with the path and the fix`, () => {
  withKernelPath('/nonexistent', () => {
    assert.equal(nativeKernelPath(), '/nonexistent');
    assert.throws(() => loadNativeKernel(), isKernelError('NativeKernelMissing', '/nonexistent'));
    assert.throws(() => loadNativeKernel(), (err: unknown) => err instanceof AbacusError && err.fix.includes(NATIVE_KERNEL_ENV));
  });
});

test('a file that is not an addon gives an AbacusError with the path and the fix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'abacus-kernel-'));
  try {
    const path = join(dir, 'abacus-kernel.node');
    writeFileSync(path, 'not a shared library');
    withKernelPath(path, () => {
      assert.throws(() => loadNativeKernel(), isKernelError('NativeKernelLoadFailed', path));
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
