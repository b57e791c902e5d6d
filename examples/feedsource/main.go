// Command feedsource shows a program that adds its own news source to the
// feed and reads the enriched items from Go: a source that turns the
// program's own events (here, a ticker of fake deploys) into raw items,
// enriched by the offline dev model.
//
//	go run ./examples/feedsource
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/feeds"
)

// deploys is a feeds.FeedSource over the program's own events.
type deploys struct{ start time.Time }

func (d *deploys) Name() string { return "deploys" }

// Fetch returns every event so far; the pipeline keeps each ID once.
func (d *deploys) Fetch(context.Context) ([]feeds.RawItem, error) {
	var out []feeds.RawItem
	for i := range 3 {
		out = append(out, feeds.RawItem{
			ID:        fmt.Sprintf("deploy-%d", i),
			Title:     fmt.Sprintf("Service v1.%d rolled out to every region", i),
			Content:   fmt.Sprintf("Release 1.%d of the service reached all regions with no errors reported.", i),
			Source:    "Deploy bot",
			Published: d.start.Add(time.Duration(i) * time.Minute),
			Tags:      []string{"technology"}, // a hint for the category
		})
	}
	return out, nil
}

func main() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{
		Dev: true, // the offline dev model enriches the items
		Feeds: perceptron.FeedsConfig{
			Sources: []feeds.FeedSource{&deploys{start: time.Now().Add(-time.Hour)}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// The pipeline runs in the background; read what it stored.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		items, err := p.Feeds.Items(ctx, "technology", time.Time{}, 10)
		if err != nil {
			log.Fatal(err)
		}
		if len(items) == 3 {
			for _, it := range items {
				fmt.Printf("%s  [%s] %s — %s\n", it.Timestamp.Format(time.Kitchen), it.Category, it.Headline, it.Summary)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatal("the items did not arrive")
}
