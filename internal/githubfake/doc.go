// Package githubfake is an httptest GitHub that behaves like the real REST
// API for the endpoints wsl-modules-action uses: tags (paginated, with
// RFC 5988 Link headers), matching refs, commit SHAs, tarballs (302 to a
// second "codeload" host that serves the bytes), releases and release
// assets (uploads under /api/uploads, downloads redirected to the bytes
// host), with GitHub's error bodies (404, 422 Validation Failed), rate-limit
// headers and 403 rate-limit bodies, ETag / If-None-Match 304s,
// immutable releases, and the repository's latest release as GitHub's
// make_latest decides it (true, false, legacy; see Server.Latest).
//
// It mirrors GitHub Enterprise Server's URL layout: the API is served under
// /api/v3 and uploads under /api/uploads of one server, so the client is
// configured exactly as on GHES through GITHUB_API_URL and GITHUB_SERVER_URL
// (see Server.Getenv). The bytes host is a separate server reached as
// "localhost" (the API as "127.0.0.1"), so it is a different host name, like
// codeload.github.com or objects.githubusercontent.com; like S3 it refuses
// requests that carry an Authorization header.
//
// Fault injection (Server.Fail, Server.DropAfter, Server.ExhaustRateLimit)
// and a request log (Server.Requests) let tests exercise retries, dropped
// connections and rate limits, and count API requests; Server.OnChange
// sees every state of a repository's releases, even between the requests
// of concurrent clients.
package githubfake
