package state

import "strings"

// entry is a key's value and cas. Sets change an entry in place rather
// than assigning to the map: assigning an existing key also stores the key
// string given, which may alias the caller's (a guest's) memory.
type entry struct {
	value []byte // never written after it is stored: a set replaces it
	cas   uint32
}

// namespace returns ns's state, creating it.
func (s *Store) namespace(ns string) *namespace {
	return s.namespaces.getOrAdd(ns, newNamespace)
}

// GetData returns key's value in namespace ns and its cas, or ErrNotFound.
// The value is the store's own, returned without copying: the caller must
// not modify it. It stays intact after later sets, which replace a value
// rather than write into it. GetData does not allocate.
func (s *Store) GetData(ns, key string) (value []byte, cas uint32, err error) {
	n := s.namespaces.get(ns)
	if n == nil {
		return nil, 0, ErrNotFound
	}
	n.mu.RLock()
	e := n.data[key]
	if e != nil {
		value, cas = e.value, e.cas
	}
	n.mu.RUnlock()
	if e == nil {
		return nil, 0, ErrNotFound
	}
	return value, cas, nil
}

// SetData sets key to a copy of value in namespace ns, giving it a new cas.
// If the key exists and cas is neither 0 nor the key's cas, it returns
// ErrCASMismatch; a new key ignores cas. A key or value over its size
// limit is ErrTooLarge; a new key past MaxKeys, or a set that would take
// the namespace past MaxBytes, is ErrQuota. A refused set changes nothing.
// Replacing a value allocates only its copy.
func (s *Store) SetData(ns, key string, value []byte, cas uint32) error {
	if len(key) > s.limits.MaxKeySize || len(value) > s.limits.MaxValueSize {
		return ErrTooLarge
	}
	n := s.namespace(ns)
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.data[key]
	if e == nil {
		size := int64(len(key)) + int64(len(value))
		if len(n.data) >= s.limits.MaxKeys || n.bytes+size > s.limits.MaxBytes {
			return ErrQuota
		}
		n.data[strings.Clone(key)] = &entry{value: clone(value), cas: n.nextCAS()}
		n.bytes += size
		return nil
	}
	if cas != 0 && cas != e.cas {
		return ErrCASMismatch
	}
	grow := int64(len(value)) - int64(len(e.value))
	if n.bytes+grow > s.limits.MaxBytes {
		return ErrQuota
	}
	// Copied under the lock, after the checks: a refused set of a large
	// value costs no allocation, and the copy holds up only this namespace.
	e.value = clone(value)
	e.cas = n.nextCAS()
	n.bytes += grow
	return nil
}

// clone copies b; unlike append([]byte(nil), b...), an empty b gives an
// empty, non-nil slice (without allocating).
func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}
