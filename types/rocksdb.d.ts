// The rocksdb binding ships no types; worker/state/rocks.ts declares the slice it uses.
declare module 'rocksdb' {
  const factory: unknown;
  export default factory;
}

// The native functions under the package's JS layer (its chained batch calls them); see RocksStore.writeEach.
declare module 'rocksdb/binding' {
  const binding: unknown;
  export default binding;
}
