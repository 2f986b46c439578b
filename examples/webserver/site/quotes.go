package site

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
)

// Quote is a quotation.
type Quote struct {
	Text   string `json:"text"`
	Author string `json:"author"`
}

var quotes = []Quote{
	{"Simplicity is prerequisite for reliability.", "Edsger W. Dijkstra"},
	{"The most effective debugging tool is still careful thought, coupled with judiciously placed print statements.", "Brian Kernighan"},
	{"Premature optimization is the root of all evil.", "Donald Knuth"},
	{"A distributed system is one in which the failure of a computer you didn't even know existed can render your own computer unusable.", "Leslie Lamport"},
	{"Make it work, make it right, make it fast.", "Kent Beck"},
	{"Clear is better than clever.", "Rob Pike"},
	{"Programs must be written for people to read, and only incidentally for machines to execute.", "Harold Abelson"},
	{"The cheapest, fastest, and most reliable components are those that aren't there.", "Gordon Bell"},
	{"Everything should be made as simple as possible, but not simpler.", "Albert Einstein"},
	{"It is not enough for code to work.", "Robert C. Martin"},
}

// fetchQuote returns a quotation from QuotesURL, or from the embedded list
// when none is set.
func (s *Site) fetchQuote(ctx context.Context) (Quote, error) {
	u := strings.TrimSpace(s.cfg.QuotesURL())
	if u == "" {
		return quotes[rand.IntN(len(quotes))], nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Quote{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return Quote{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Quote{}, fmt.Errorf("%s answered %s", u, resp.Status)
	}
	var q Quote
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&q); err != nil {
		return Quote{}, fmt.Errorf("%s sent no quotation JSON: %w", u, err)
	}
	if strings.TrimSpace(q.Text) == "" {
		return Quote{}, errors.New(u + " sent a quotation without text")
	}
	return q, nil
}
