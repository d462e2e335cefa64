// Package strhash hashes short strings (MACs, addresses, IDs) for in-memory maps
// and memos on the hot paths, without the allocation or interface call of
// hash/fnv.
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
