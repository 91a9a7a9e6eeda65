// Package kconfig reads kernel .config files and applies the module list's
// config fragment rules (only n→m changes of tristate options).
package kconfig
