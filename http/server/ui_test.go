package server

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gin-gonic/gin"
)

// testBundle is a built bundle as web/dist holds one after `npm run build`.
var testBundle = fstest.MapFS{
	"console.js":    {Data: []byte(`console.log("otherix console")`)},
	"console.css":   {Data: []byte(`body { background: #000 }`)},
	"dashboard.js":  {Data: []byte(`console.log("otherix dashboard")`)},
	"dashboard.css": {Data: []byte(`main { display: grid }`)},
	"README.md":     {Data: []byte("# web/dist")},
	".gitkeep":      {Data: nil},
}

// uiHandler routes the console UI u as routes.go does, so a test can serve
// a bundle of its choice.
func uiHandler(t *testing.T, u *consoleUI) http.Handler {
	t.Helper()
	s, _, _ := newTestServer(t, Config{})
	e := gin.New()
	e.GET("/ui/vms/:name/console", func(c *gin.Context) { u.page(c.Writer, c.Param("name")) })
	e.GET("/ui/assets/*path", func(c *gin.Context) { s.serveUIAsset(c, u) })
	e.GET("/ui/", func(c *gin.Context) { u.dashboard(c.Writer) })
	return e
}

func uiGet(t *testing.T, h http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

var bodyNonce = regexp.MustCompile(`data-style-nonce="([^"]+)"`)

// checkPageCSP checks the page's security headers and that the policy's
// style nonce is the one the page hands its script.
func checkPageCSP(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self';", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q allows something unsafe", csp)
	}
	m := bodyNonce.FindStringSubmatch(rec.Body.String())
	if m == nil || !strings.Contains(csp, "style-src 'self' 'nonce-"+m[1]+"'") {
		t.Errorf("the page's nonce %v is not the CSP's style nonce: %q", m, csp)
	}
	if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", rec.Header())
	}
}

func TestUIPage(t *testing.T) {
	u := newConsoleUI(testBundle, true)
	h := uiHandler(t, u)
	rec := uiGet(t, h, "/ui/vms/web-1/console")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	checkPageCSP(t, rec)
	body := rec.Body.String()
	for _, want := range []string{
		`<script type="module" src="/ui/assets/console.js?v=` + u.version + `"></script>`,
		`<link rel="stylesheet" href="/ui/assets/console.css?v=` + u.version + `">`,
		`data-vm="web-1"`, "<title>web-1 — Otherix console</title>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	// A fresh nonce for every answer.
	again := uiGet(t, h, "/ui/vms/web-1/console")
	if bodyNonce.FindString(again.Body.String()) == bodyNonce.FindString(body) {
		t.Error("two answers share a nonce")
	}
	// The name is the caller's: it is escaped, never markup.
	evil := uiGet(t, h, "/ui/vms/%3Cscript%3Ealert(1)%22%3E/console")
	if evil.Code != http.StatusOK || strings.Contains(evil.Body.String(), "<script>alert") ||
		!strings.Contains(evil.Body.String(), `data-vm="&lt;script&gt;alert(1)&#34;&gt;"`) {
		t.Errorf("name not escaped:\n%s", evil.Body)
	}
}

// TestUIDashboardPage: GET /ui/ is the dashboard's shell, under the same
// policy as the console page, loading the versioned dashboard bundle.
func TestUIDashboardPage(t *testing.T) {
	u := newConsoleUI(testBundle, true)
	h := uiHandler(t, u)
	rec := uiGet(t, h, "/ui/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	checkPageCSP(t, rec)
	body := rec.Body.String()
	for _, want := range []string{
		`<script type="module" src="/ui/assets/dashboard.js?v=` + u.version + `"></script>`,
		`<link rel="stylesheet" href="/ui/assets/dashboard.css?v=` + u.version + `">`,
		"<title>Otherix</title>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	// The only script is the bundle: nothing inline that the policy would
	// have to allow.
	if n := strings.Count(body, "<script"); n != 1 {
		t.Errorf("%d script elements:\n%s", n, body)
	}
	if bodyNonce.FindString(uiGet(t, h, "/ui/").Body.String()) == bodyNonce.FindString(body) {
		t.Error("two answers share a nonce")
	}
	for _, name := range []string{"dashboard.js", "dashboard.css"} {
		if a := uiGet(t, h, "/ui/assets/"+name+"?v="+u.version); a.Code != http.StatusOK ||
			a.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("%s: status %d, headers %v", name, a.Code, a.Header())
		}
	}

	none := uiHandler(t, newConsoleUI(fstest.MapFS{"README.md": {Data: []byte("# web/dist")}}, false))
	rec = uiGet(t, none, "/ui/")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("without the bundle: status %d", rec.Code)
	}
	checkPageCSP(t, rec)
	if b := rec.Body.String(); !strings.Contains(b, "make build") || strings.Contains(b, "<script") {
		t.Errorf("page does not say how to build the dashboard:\n%s", b)
	}
}

func TestUIPageWithoutBundle(t *testing.T) {
	u := newConsoleUI(fstest.MapFS{"README.md": {Data: []byte("# web/dist")}}, false)
	h := uiHandler(t, u)
	rec := uiGet(t, h, "/ui/vms/web-1/console")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	checkPageCSP(t, rec)
	body := rec.Body.String()
	if !strings.Contains(body, "make build") || !strings.Contains(body, "npm run build") || strings.Contains(body, "<script") {
		t.Errorf("page does not say how to build the console:\n%s", body)
	}
	for _, name := range []string{"console.js", "console.css", "README.md"} {
		wantError(t, uiGet(t, h, "/ui/assets/"+name), http.StatusNotFound, "route_not_found")
	}
}

func TestUIAssets(t *testing.T) {
	u := newConsoleUI(testBundle, true)
	h := uiHandler(t, u)
	for _, tc := range []struct {
		name, ctype, body string
	}{
		{"console.js", "text/javascript; charset=utf-8", `console.log("otherix console")`},
		{"console.css", "text/css; charset=utf-8", `body { background: #000 }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := uiGet(t, h, "/ui/assets/"+tc.name)
			if rec.Code != http.StatusOK || rec.Body.String() != tc.body {
				t.Fatalf("status %d body %q", rec.Code, rec.Body)
			}
			if rec.Header().Get("Content-Type") != tc.ctype || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("headers %v", rec.Header())
			}
			// Unversioned: revalidate. Versioned as the page links it: keep.
			if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
				t.Errorf("unversioned Cache-Control %q", cc)
			}
			v := uiGet(t, h, "/ui/assets/"+tc.name+"?v="+u.version)
			if cc := v.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
				t.Errorf("versioned Cache-Control %q", cc)
			}
			if old := uiGet(t, h, "/ui/assets/"+tc.name+"?v=0000"); old.Header().Get("Cache-Control") != "no-cache" {
				t.Errorf("another version's URL is cached for good: %v", old.Header())
			}
			etag := rec.Header().Get("ETag")
			if nm := uiGet(t, h, "/ui/assets/"+tc.name, "If-None-Match", etag); etag == "" || nm.Code != http.StatusNotModified {
				t.Errorf("If-None-Match %q: status %d", etag, nm.Code)
			}
		})
	}
	for _, name := range []string{"nope.js", "README.md", ".gitkeep", "", "../embed.go", "%2e%2e/embed.go", "dist/console.js"} {
		t.Run("404 "+name, func(t *testing.T) {
			wantError(t, uiGet(t, h, "/ui/assets/"+name), http.StatusNotFound, "route_not_found")
		})
	}
}

// TestUIRoutes: the server routes the console's page and bundle without a
// token, whether or not this build embeds the bundle.
func TestUIRoutes(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	page := req{method: "GET", path: "/ui/vms/web-1/console", header: map[string]string{"Authorization": ""}}.do(t, s)
	checkPageCSP(t, page)
	js := req{method: "GET", path: "/ui/assets/console.js", header: map[string]string{"Authorization": ""}}.do(t, s)
	if bundledUI.built {
		if page.Code != http.StatusOK || js.Code != http.StatusOK || js.Body.Len() < 1000 {
			t.Errorf("built: page %d, console.js %d (%d bytes)", page.Code, js.Code, js.Body.Len())
		}
	} else {
		t.Log("this build has no console bundle (run make build): checking the placeholder")
		if page.Code != http.StatusServiceUnavailable || js.Code != http.StatusNotFound {
			t.Errorf("not built: page %d, console.js %d", page.Code, js.Code)
		}
	}
	wantError(t, req{method: "GET", path: "/ui/assets/missing.js"}.do(t, s), http.StatusNotFound, "route_not_found")

	dash := req{method: "GET", path: "/ui/", header: map[string]string{"Authorization": ""}}.do(t, s)
	checkPageCSP(t, dash)
	djs := req{method: "GET", path: "/ui/assets/dashboard.js", header: map[string]string{"Authorization": ""}}.do(t, s)
	if bundledUI.built {
		if dash.Code != http.StatusOK || djs.Code != http.StatusOK || djs.Body.Len() < 1000 {
			t.Errorf("built: dashboard %d, dashboard.js %d (%d bytes)", dash.Code, djs.Code, djs.Body.Len())
		}
	} else if dash.Code != http.StatusServiceUnavailable || djs.Code != http.StatusNotFound {
		t.Errorf("not built: dashboard %d, dashboard.js %d", dash.Code, djs.Code)
	}
	root := req{method: "GET", path: "/ui", header: map[string]string{"Authorization": ""}}.do(t, s)
	if root.Code != http.StatusMovedPermanently || root.Header().Get("Location") != "/ui/" {
		t.Errorf("GET /ui: status %d, Location %q", root.Code, root.Header().Get("Location"))
	}
}
