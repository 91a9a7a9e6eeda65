//go:build !race

package digest

// raceEnabled: the race detector makes sync.Pool drop items at random.
const raceEnabled = false
