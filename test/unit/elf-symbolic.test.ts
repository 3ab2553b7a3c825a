import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { dynamicSymbolVisibility, protectDefinedSymbols } from '../../scripts/elf-symbolic';

// The object the image patches: RocksDB's prebuilt glibc binding.
const binding = readFileSync(require.resolve('rocksdb/prebuilds/linux-x64/node.napi.glibc.node'));
const SCANNER = '_ZNSt8__detail8_ScannerIcE10_M_advanceEv';

test('defined symbols become protected; Node-API entry points and imports stay as they were', () => {
  const before = dynamicSymbolVisibility(binding);
  const { elf, protectedCount } = protectDefinedSymbols(binding);
  const after = dynamicSymbolVisibility(elf);
  assert.ok(protectedCount > 1000, `only ${protectedCount} symbols protected`);
  assert.equal(before.get(SCANNER), 0, 'the regex scanner the crash came from is a default-visibility definition');
  assert.equal(after.get(SCANNER), 3);
  // Imports (Node-API functions the binding calls) are not definitions: unchanged.
  for (const name of ['napi_module_register', 'napi_create_function']) {
    assert.equal(before.get(name), 0, name);
    assert.equal(after.get(name), 0, name);
  }
  assert.equal(elf.length, binding.length);
  assert.notEqual(binding.compare(elf), 0, 'the input buffer is not modified in place');
  assert.equal(dynamicSymbolVisibility(binding).get(SCANNER), 0);
});

test('patching twice changes nothing more', () => {
  const once = protectDefinedSymbols(binding).elf;
  const twice = protectDefinedSymbols(once).elf;
  assert.equal(once.compare(twice), 0);
});

test('what is not a 64-bit little-endian ELF shared object is refused with the reason', () => {
  assert.throws(() => protectDefinedSymbols(Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80))), /not an ELF file/);
  const elf32 = Buffer.from(binding.subarray(0, 64));
  elf32[4] = 1;
  assert.throws(() => protectDefinedSymbols(elf32), /64-bit little-endian/);
});
