// The rocksdb binding ships no types; worker/state/rocks.ts declares the slice it uses.
declare module 'rocksdb' {
  const factory: unknown;
  export default factory;
}
