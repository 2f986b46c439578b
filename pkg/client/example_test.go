package client_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/switchboard-rt/switchboard/pkg/client"
)

// A web server dials once at start-up and shares the client between its
// handlers.
func Example() {
	c, err := client.Dial("localhost:9090", client.WithToken(os.Getenv("SWITCHBOARD_API_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Emit(ctx, "ShowMessage", map[string]any{"text": "Hello, browsers"})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("message %s queued to %d browsers", res.ID, res.Recipients)

	res, err = c.Emit(ctx, "Quote", struct {
		Symbol string  `json:"symbol"`
		Price  float64 `json:"price"`
	}{"ACME", 12.5}, client.ToChannel("quotes"))
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("quote %s queued to %d subscribers", res.ID, res.Recipients)

	n, err := c.Count(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%d browsers online", n)
}

// Watch follows the count until its context ends, across node restarts.
func ExampleClient_Watch() {
	c, err := client.Dial("localhost:9090")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	err = c.Watch(ctx, "", func(count int64) {
		log.Printf("%d browsers online", count)
	})
	log.Printf("watch ended: %v", err)
}
