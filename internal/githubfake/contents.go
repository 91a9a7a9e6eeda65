package githubfake

import "net/http"

// handleContents serves GET /repos/{owner}/{repo}/contents/{path}?ref=.
// Not implemented yet: every file is missing.
func (s *Server) handleContents(w http.ResponseWriter, r *http.Request) {
	s.errorJSON(w, r, http.StatusNotFound, "Not Found", nil)
}
