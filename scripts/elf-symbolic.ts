/**
 * Gives a 64-bit little-endian ELF shared object "symbolic" binding after it was linked:
 * every function and object it defines becomes STV_PROTECTED in its dynamic symbol table,
 * so the dynamic linker binds the object's own references to its own definitions rather
 * than to same-named ones exported by the executable that loads it.
 *
 * Why (scripts/image-rootfs.sh): RocksDB's prebuilt binding was compiled with the old
 * libstdc++ string ABI and carries its own instances of templates such as
 * std::__detail::_Scanner<char>. The official Node.js >= 22 binaries export instances of
 * the same templates built with the new ABI; the loader prefers the executable's, so the
 * binding's std::regex compiler calls code that disagrees with it about std::string's
 * layout and aborts with std::bad_alloc while RocksDB registers its plugins at load time.
 *
 *   node dist/scripts/elf-symbolic.js IN OUT
 */
import { readFileSync, writeFileSync } from 'node:fs';

const SHT_DYNSYM = 11;
const STB_GLOBAL = 1;
const STB_WEAK = 2;
const STT_OBJECT = 1;
const STT_FUNC = 2;
const STV_PROTECTED = 3;
const SYM_SIZE = 24;

/** Names the object must keep exporting with default visibility (Node-API's entry points). */
export function isModuleEntryPoint(name: string): boolean {
  return name.startsWith('napi_') || name.startsWith('node_api_');
}

export interface SymbolicResult {
  /** The patched object (a copy; the input is not changed). */
  elf: Buffer;
  /** Defined functions and objects now protected. */
  protectedCount: number;
}

export function protectDefinedSymbols(input: Buffer, keepDefault: (name: string) => boolean = isModuleEntryPoint): SymbolicResult {
  if (input.length < 64 || input.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file (no \\x7fELF magic)');
  if (input[4] !== 2 || input[5] !== 1) throw new Error('only 64-bit little-endian ELF objects are supported');
  const elf = Buffer.from(input);
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const section = (i: number) => {
    const o = shoff + i * shentsize;
    return { type: elf.readUInt32LE(o + 4), offset: Number(elf.readBigUInt64LE(o + 0x18)), size: Number(elf.readBigUInt64LE(o + 0x20)), link: elf.readUInt32LE(o + 0x28) };
  };
  let protectedCount = 0;
  let sawDynsym = false;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_DYNSYM) continue;
    sawDynsym = true;
    const strtab = section(s.link).offset;
    for (let o = s.offset; o + SYM_SIZE <= s.offset + s.size; o += SYM_SIZE) {
      const info = elf.readUInt8(o + 4);
      const shndx = elf.readUInt16LE(o + 6);
      const bind = info >> 4;
      const type = info & 0xf;
      if (shndx === 0 || (bind !== STB_GLOBAL && bind !== STB_WEAK) || (type !== STT_FUNC && type !== STT_OBJECT)) continue;
      const nameAt = strtab + elf.readUInt32LE(o);
      const name = elf.toString('latin1', nameAt, elf.indexOf(0, nameAt));
      if (keepDefault(name)) continue;
      const other = elf.readUInt8(o + 5);
      elf.writeUInt8((other & ~3) | STV_PROTECTED, o + 5);
      protectedCount++;
    }
  }
  if (!sawDynsym) throw new Error('the object has no dynamic symbol table (is it a shared object?)');
  return { elf, protectedCount };
}

/** Visibility (st_other & 3) of each named dynamic symbol, for checks. */
export function dynamicSymbolVisibility(elf: Buffer): Map<string, number> {
  const out = new Map<string, number>();
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    if (elf.readUInt32LE(o + 4) !== SHT_DYNSYM) continue;
    const offset = Number(elf.readBigUInt64LE(o + 0x18));
    const size = Number(elf.readBigUInt64LE(o + 0x20));
    const strtab = Number(elf.readBigUInt64LE(shoff + elf.readUInt32LE(o + 0x28) * shentsize + 0x18));
    for (let s = offset; s + SYM_SIZE <= offset + size; s += SYM_SIZE) {
      const nameAt = strtab + elf.readUInt32LE(s);
      out.set(elf.toString('latin1', nameAt, elf.indexOf(0, nameAt)), elf.readUInt8(s + 5) & 3);
    }
  }
  return out;
}

if (require.main === module) {
  const [input, output] = process.argv.slice(2);
  if (input === undefined || output === undefined) {
    console.error('usage: node dist/scripts/elf-symbolic.js IN OUT');
    process.exit(2);
  }
  const { elf, protectedCount } = protectDefinedSymbols(readFileSync(input));
  writeFileSync(output, elf, { mode: 0o755 });
  console.error(`elf-symbolic: ${protectedCount} symbols of ${input} bind to their own definitions`);
}
