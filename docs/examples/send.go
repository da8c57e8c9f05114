// Sends two records to a messagebuffer agent in acknowledged mode and checks every answer.
//
//	go run docs/examples/send.go SOCKET TOPIC    (or MB_SOCKET and MB_TOPIC in the environment)
//
// The agent answers "#ack" with "ok", then each line with "ok" once the record is stored, or
// with "error line N: REASON". Exits 0 only when all three answers are "ok"; 1 otherwise; 2 on
// usage errors. Go standard library only.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	path, topic := os.Getenv("MB_SOCKET"), os.Getenv("MB_TOPIC")
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if len(os.Args) > 2 {
		topic = os.Args[2]
	}
	if path == "" || topic == "" {
		fmt.Fprintln(os.Stderr, "usage: send SOCKET TOPIC (or MB_SOCKET and MB_TOPIC)")
		os.Exit(2)
	}
	// TOPIC<TAB>KEY<TAB>VALUE; in KEY and VALUE, write \\ \n \t \r for those characters.
	lines := []string{topic + "\tkey-1\thello from Go", topic + "\tkey-2\tsecond line"}
	sent := append([]string{"#ack"}, lines...)

	conn, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(strings.Join(sent, "\n") + "\n")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Nothing more to send: the agent answers every line, then closes.
	conn.(*net.UnixConn).CloseWrite()

	answers := bufio.NewReader(conn)
	failed := 0
	for _, line := range sent {
		answer, _ := answers.ReadString('\n')
		answer = strings.TrimSuffix(answer, "\n")
		if answer != "ok" {
			if answer == "" {
				answer = "no answer"
			}
			fmt.Fprintf(os.Stderr, "%q: %s\n", line, answer)
			failed++
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
	fmt.Printf("send.go: %d records stored\n", len(lines))
}
