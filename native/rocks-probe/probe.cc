// The cost of one batched lookup per micro-batch from native code (docs/adr/0007-hot-path.md):
// what a kernel that owns RocksDB directly would pay, to set beside bench/hotpath/rocks-getmany.ts
// (the `rocksdb` binding). Same shape: `keys` 16-byte keys (random-looking: two splitmix64
// outputs of the index), no compression, a 10-bit Bloom filter, an LRU block cache, loaded in
// WriteBatches of 50,000, flushed and compacted; then rounds of one batched MultiGet of
// `batch` keys, all present, then all absent. CPU time is getrusage(RUSAGE_SELF): all threads.
//
//   g++ -O2 -std=c++17 probe.cc -lrocksdb -o probe && ./probe DIR [keys] [batch] [rounds] [cache MiB]
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static void key_of(uint64_t i, char* out) {
  uint64_t a = splitmix(2 * i), b = splitmix(2 * i + 1);
  memcpy(out, &a, 8);
  memcpy(out + 8, &b, 8);
}

static double cpu_seconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void check(const rocksdb::Status& s, const char* what) {
  if (!s.ok()) {
    fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    exit(1);
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: probe DIR [keys] [batch] [rounds] [cache MiB]\n");
    return 2;
  }
  const uint64_t stored = argc > 2 ? strtoull(argv[2], nullptr, 10) : 2000000;
  const size_t batch = argc > 3 ? strtoull(argv[3], nullptr, 10) : 10000;
  const int rounds = argc > 4 ? atoi(argv[4]) : 30;
  const size_t cache = (argc > 5 ? strtoull(argv[5], nullptr, 10) : 64) << 20;

  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.block_cache = rocksdb::NewLRUCache(cache);
  rocksdb::Options options;
  options.create_if_missing = true;
  options.compression = rocksdb::kNoCompression;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* db;
  check(rocksdb::DB::Open(options, argv[1], &db), "open");

  double c0 = cpu_seconds(), w0 = wall_seconds();
  char k[16];
  for (uint64_t from = 0; from < stored; from += 50000) {
    rocksdb::WriteBatch b;
    for (uint64_t i = from; i < from + 50000 && i < stored; i++) {
      key_of(i, k);
      b.Put(rocksdb::Slice(k, 16), rocksdb::Slice("\1\0\0\0", 4));
    }
    check(db->Write(rocksdb::WriteOptions(), &b), "write");
  }
  printf("{\"binding\":\"RocksDB %d.%d C++ (Debian librocksdb)\",\"mode\":\"put\",\"batch\":50000,\"keys\":%llu,\"nsPerKeyCpu\":%.0f,\"wallSeconds\":%.2f}\n", ROCKSDB_MAJOR, ROCKSDB_MINOR,
         (unsigned long long)stored, (cpu_seconds() - c0) * 1e9 / stored, wall_seconds() - w0);
  check(db->Flush(rocksdb::FlushOptions()), "flush");
  check(db->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr), "compact");

  std::mt19937_64 rng(7);
  std::vector<std::string> keys(batch, std::string(16, '\0'));
  std::vector<rocksdb::Slice> slices(batch);
  std::vector<rocksdb::PinnableSlice> values(batch);
  std::vector<rocksdb::Status> statuses(batch);
  for (const char* mode : {"present", "absent"}) {
    double cpu = 0, wall = 0;
    size_t found = 0;
    for (int r = 0; r < rounds; r++) {
      uint64_t from = strcmp(mode, "present") == 0 ? rng() % (stored - batch) : stored + (uint64_t)r * batch;
      for (size_t i = 0; i < batch; i++) {
        key_of(from + i, &keys[i][0]);
        slices[i] = rocksdb::Slice(keys[i]);
        values[i].Reset();
      }
      double c = cpu_seconds(), w = wall_seconds();
      db->MultiGet(rocksdb::ReadOptions(), db->DefaultColumnFamily(), batch, slices.data(), values.data(), statuses.data(), false);
      cpu += cpu_seconds() - c;
      wall += wall_seconds() - w;
      for (size_t i = 0; i < batch; i++) {
        if (statuses[i].ok()) found++;
        else if (!statuses[i].IsNotFound()) check(statuses[i], "multiget");
      }
    }
    printf("{\"binding\":\"RocksDB %d.%d C++ (Debian librocksdb)\",\"mode\":\"%s\",\"batch\":%zu,\"found\":%zu,\"cpuMsPerBatch\":%.2f,\"wallMsPerBatch\":%.2f,\"nsPerKeyCpu\":%.0f}\n", ROCKSDB_MAJOR,
           ROCKSDB_MINOR, mode, batch, found / rounds, cpu * 1e3 / rounds, wall * 1e3 / rounds, cpu * 1e9 / (rounds * (double)batch));
  }
  delete db;
  return 0;
}
