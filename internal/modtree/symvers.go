package modtree

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SymverEntry is one line of Module.symvers.
type SymverEntry struct {
	CRC       uint64
	Module    string // "vmlinux" or a module path
	Export    string // EXPORT_SYMBOL, EXPORT_SYMBOL_GPL
	Namespace string
}

// ReadSymvers parses a Module.symvers file:
// "0xCRC<TAB>symbol<TAB>module<TAB>export[<TAB>namespace]".
func ReadSymvers(path string) (map[string]SymverEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("symvers: %w", err)
	}
	defer f.Close()
	out := map[string]SymverEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		if sc.Text() == "" {
			continue
		}
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 4 {
			return nil, fmt.Errorf("symvers: %s:%d: want at least 4 tab-separated fields, got %d", path, line, len(fields))
		}
		crc, err := strconv.ParseUint(strings.TrimPrefix(fields[0], "0x"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("symvers: %s:%d: bad CRC %q", path, line, fields[0])
		}
		e := SymverEntry{CRC: crc, Module: fields[2], Export: fields[3]}
		if len(fields) > 4 {
			e.Namespace = fields[4]
		}
		out[fields[1]] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("symvers: %s: %w", path, err)
	}
	return out, nil
}
