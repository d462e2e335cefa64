// Package strhash hashes short strings (MACs, addresses, IDs) on the hot paths:
// to pick a shard, to spread periodic work per machine, to compare a value
// with one seen before. It has neither the allocation nor the interface call
// of hash/fnv.
package strhash

// FNV64a is the 64-bit FNV-1a hash of s.
func FNV64a[T ~string | ~[]byte](s T) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
