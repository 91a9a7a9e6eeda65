// Package jobserver runs child processes under one GNU make jobserver, so
// several concurrent makes share a fixed number of job slots, and runs
// commands in their own process group so cancellation kills the whole tree.
package jobserver
