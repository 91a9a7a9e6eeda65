// Package dkms reads dkms.conf files as DKMS does (sourced by bash in a
// clean environment) and applies their directives: patches, exclusions,
// built module names and destinations.
package dkms
