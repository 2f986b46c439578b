package site

import (
	_ "embed"
	"html/template"
)

//go:embed page.html
var pageHTML string

// pageTemplate renders the page; html/template escapes the config into the
// script safely.
var pageTemplate = template.Must(template.New("page").Parse(pageHTML))
