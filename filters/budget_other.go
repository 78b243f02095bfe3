//go:build !linux

package filters

// defaultBudgetLimit is a fixed 4 GiB where the machine's memory is not
// read.
func defaultBudgetLimit() uint64 { return 4 << 30 }
