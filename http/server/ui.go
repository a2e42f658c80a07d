package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/web"
)

// The browser console and fleet dashboard (DESIGN §2: web/ builds them,
// http/server embeds them). GET /ui/vms/:name/console and GET /ui/ answer a
// small HTML shell that loads the bundle from /ui/assets/; the page then
// authenticates itself through the API, so these routes are public and hand
// out nothing but static code.

// uiContentTypes are the bundle files served, by extension; anything else
// in web/dist (its README) is not.
var uiContentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".map": "application/json",
}

// uiCSP is the pages' Content-Security-Policy: everything from this
// origin only. connect-src 'self' also covers wss:// to this host (CSP
// level 3). xterm.js inserts <style> elements at run time, so styles also
// admit this response's nonce, which the page stamps on them; there is no
// 'unsafe-inline' for anything.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-%s'; " +
	"img-src 'self' data:; font-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiAsset is one bundle file, read once at start.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

// consoleUI serves the console and dashboard pages and their bundle.
type consoleUI struct {
	// built says the bundle was built into the binary; without it the page
	// says how to build it.
	built bool
	// assets by file name (console.js, console.css, dashboard.js, …).
	assets map[string]uiAsset
	// version names the bundle in asset URLs, so a browser may cache a
	// versioned URL for good and a new binary's page fetches the new bundle.
	version string
}

// bundledUI is the console embedded in this binary.
var bundledUI = newConsoleUI(web.Bundle())

// newConsoleUI reads the bundle's servable files from fsys.
func newConsoleUI(fsys fs.FS, built bool) *consoleUI {
	u := &consoleUI{built: built, assets: map[string]uiAsset{}}
	if fsys == nil {
		return u
	}
	entries, _ := fs.ReadDir(fsys, ".")
	all := sha256.New()
	for _, e := range entries {
		ct, ok := uiContentTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			continue
		}
		sum := sha256.Sum256(body)
		u.assets[e.Name()] = uiAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		all.Write([]byte(e.Name()))
		all.Write(sum[:])
	}
	u.version = hex.EncodeToString(all.Sum(nil)[:8])
	return u
}

var uiPage = template.Must(template.New("console").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{{.VM}} — Otherix console</title>
{{- if .Built}}
<link rel="stylesheet" href="/ui/assets/console.css?v={{.Version}}">
<script type="module" src="/ui/assets/console.js?v={{.Version}}"></script>
{{- else}}
<style nonce="{{.Nonce}}">
body { margin: 0; padding: 48px; background: #0d1117; color: #d1d7e0; font: 15px/1.5 system-ui, sans-serif; }
code { background: #161b22; padding: 2px 6px; border-radius: 4px; }
</style>
{{- end}}
</head>
<body data-vm="{{.VM}}" data-style-nonce="{{.Nonce}}">
{{- if .Built}}
<noscript>The Otherix console needs JavaScript.</noscript>
{{- else}}
<h1>The browser console is not built into this binary</h1>
<p>The console of <code>{{.VM}}</code> needs the web bundle: {{.Hint}}.
Meanwhile, <code>otherix vm console {{.VM}}</code> opens it from a terminal.</p>
{{- end}}
</body>
</html>
`))

var dashboardPage = template.Must(template.New("dashboard").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Otherix</title>
{{- if .Built}}
<link rel="stylesheet" href="/ui/assets/dashboard.css?v={{.Version}}">
<script type="module" src="/ui/assets/dashboard.js?v={{.Version}}"></script>
{{- else}}
<style nonce="{{.Nonce}}">
body { margin: 0; padding: 48px; background: #0d1117; color: #d1d7e0; font: 15px/1.5 system-ui, sans-serif; }
code { background: #161b22; padding: 2px 6px; border-radius: 4px; }
</style>
{{- end}}
</head>
<body data-style-nonce="{{.Nonce}}">
{{- if .Built}}
<noscript>The Otherix dashboard needs JavaScript.</noscript>
{{- else}}
<h1>The web dashboard is not built into this binary</h1>
<p>The dashboard needs the web bundle: {{.Hint}}.
Meanwhile, <code>otherix vm list -w</code> and <code>otherix node list -w</code> follow the fleet from a terminal.</p>
{{- end}}
</body>
</html>
`))

// page answers the console page of the VM called name. Without the bundle
// it answers 503 with a page that says how to build it.
func (u *consoleUI) page(w http.ResponseWriter, name string) {
	u.render(w, uiPage, name)
}

// dashboard answers the fleet dashboard's page; without the bundle, 503
// and how to build it.
func (u *consoleUI) dashboard(w http.ResponseWriter) {
	u.render(w, dashboardPage, "")
}

// render answers one of the shell pages with a fresh style nonce in both
// the page and its Content-Security-Policy.
func (u *consoleUI) render(w http.ResponseWriter, page *template.Template, name string) {
	var raw [18]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on supported platforms
	nonce := base64.RawURLEncoding.EncodeToString(raw[:])
	var buf bytes.Buffer
	err := page.Execute(&buf, struct {
		VM, Nonce, Version, Hint string
		Built                    bool
	}{VM: name, Nonce: nonce, Version: u.version, Hint: web.BuildHint, Built: u.built})
	if err != nil {
		http.Error(w, "render the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", strings.Replace(uiCSP, "%s", nonce, 1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	status := http.StatusOK
	if !u.built {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// asset serves one bundle file and reports whether it exists. A URL that
// names the current bundle version may be cached for good; any other is
// revalidated by ETag.
func (u *consoleUI) asset(w http.ResponseWriter, r *http.Request, name string) bool {
	a, ok := u.assets[name]
	if !ok {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if v := r.URL.Query().Get("v"); v != "" && v == u.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	return true
}

// uiConsole is GET /ui/vms/:name/console.
func (s *Server) uiConsole(c *gin.Context) { bundledUI.page(c.Writer, c.Param("name")) }

// uiDashboard is GET /ui/, the fleet dashboard.
func (s *Server) uiDashboard(c *gin.Context) { bundledUI.dashboard(c.Writer) }

// uiRoot is GET /ui: the dashboard lives at /ui/ (the router does not add
// trailing slashes by itself).
func (s *Server) uiRoot(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/ui/") }

// uiAssets is GET /ui/assets/*path.
func (s *Server) uiAssets(c *gin.Context) { s.serveUIAsset(c, bundledUI) }

func (s *Server) serveUIAsset(c *gin.Context, u *consoleUI) {
	name := strings.TrimPrefix(c.Param("path"), "/")
	if !u.asset(c.Writer, c.Request, name) {
		s.writeError(c, apiError(kindRouteNotFound, "route_not_found", "no console asset %q", name))
	}
}
