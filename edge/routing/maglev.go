package routing

import (
	"runtime"
	"strings"
	"sync"
	"weak"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/fbs"
)

// maglevSize is the Maglev table's length for every cluster: a prime
// (the paper's and Envoy's default), 64 slots per endpoint at the most
// endpoints a cluster may have, which keeps their shares within a slot or
// two of each other. It must not depend on the endpoint count: a key's
// slot is its hash modulo the length, so a length that followed the count
// in steps moved 60–97 % of all keys when a cluster crossed a step (5 → 4
// endpoints, 17 → 16, 66 → 65) instead of the removed endpoint's 1/N.
const maglevSize = 65537

// maglevRing is a built table and the endpoint list it was built for.
type maglevRing struct {
	endpoints string // each address followed by a 0 byte, in order
	table     []uint16
}

// rings shares Maglev tables between tables: endpoint list → weak pointer
// to its maglevRing. A table of this length takes about a millisecond to
// build, and snapshots swap up to 10 times a second under health changes,
// almost always with the hash clusters' endpoint lists unchanged. An entry
// goes when its ring is collected, i.e. no table in service uses it.
var rings sync.Map

// ringFor returns the Maglev table of cv's endpoint list, shared with
// every other table whose cluster lists the same addresses in the same
// order (the table depends on nothing else).
func ringFor(cv fbs.ClusterView) *maglevRing {
	var sb strings.Builder
	for j := range cv.NumEndpoints() {
		sb.Write(cv.Endpoint(j))
		sb.WriteByte(0)
	}
	key := sb.String()
	if v, ok := rings.Load(key); ok {
		if r := v.(weak.Pointer[maglevRing]).Value(); r != nil {
			return r
		}
	}
	r := &maglevRing{endpoints: key, table: maglev(cv)}
	wp := weak.Make(r)
	rings.Store(key, wp)
	runtime.AddCleanup(r, func(key string) { rings.CompareAndDelete(key, wp) }, key)
	return r
}

// maglev builds the Maglev lookup table (Eisenbud et al., NSDI 2016) over
// the endpoint addresses: each endpoint walks its own permutation of the
// table (offset, offset+skip, … mod the length) and claims the next free
// slot in turn.
func maglev(cv fbs.ClusterView) []uint16 {
	n := cv.NumEndpoints()
	if n == 0 {
		return nil
	}
	const m = maglevSize
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for j := range n {
		addr := cv.Endpoint(j)
		offset[j] = xxhash.Sum64(addr) % m
		skip[j] = (xxhash.Sum64(append([]byte{0xff}, addr...)))%(m-1) + 1
	}
	table := make([]uint16, m)
	filled := make([]bool, m)
	for done := 0; done < m; {
		for j := 0; j < n && done < m; j++ {
			for {
				c := (offset[j] + next[j]*skip[j]) % m
				next[j]++
				if !filled[c] {
					filled[c] = true
					table[c] = uint16(j)
					done++
					break
				}
			}
		}
	}
	return table
}
