package image

import "time"

type timeT = time.Time

func unixTime(n int64) time.Time { return time.Unix(n, 0) }
