package depmod

// superFastHash is Paul Hsieh's SuperFastHash
// (http://www.azillionmonkeys.com/qed/hash.html), with 16-bit reads in
// little-endian order and the trailing odd byte taken as a signed char, as
// on x86-64 and arm64. kmod keys its symbol hash table with it, and the
// order of modules.symbols is that table's iteration order.
func superFastHash(s string) uint32 {
	n := len(s)
	if n == 0 {
		return 0
	}
	h := uint32(n)
	get16 := func(i int) uint32 { return uint32(s[i]) | uint32(s[i+1])<<8 }
	i := 0
	for k := n >> 2; k > 0; k-- {
		h += get16(i)
		tmp := get16(i+2)<<11 ^ h
		h = h<<16 ^ tmp
		i += 4
		h += h >> 11
	}
	switch n & 3 {
	case 3:
		h += get16(i)
		h ^= h << 16
		h ^= uint32(int32(int8(s[i+2]))) << 18
		h += h >> 11
	case 2:
		h += get16(i)
		h ^= h << 11
		h += h >> 17
	case 1:
		h += uint32(int32(int8(s[i])))
		h ^= h << 10
		h += h >> 1
	}
	h ^= h << 3
	h += h >> 5
	h ^= h << 4
	h += h >> 17
	h ^= h << 25
	h += h >> 6
	return h
}

// symbolBuckets is the number of buckets of kmod's symbol hash table.
const symbolBuckets = 2048
