//go:build linux

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/portcullis-gw/portcullis/cmd/internal/app"
	"github.com/portcullis-gw/portcullis/gateway/config"
)

func serveCommand() *cobra.Command {
	var cfgPath, dataDir, logLevel, cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [--data DIR]",
		Short: "run the gateway (with no config: safe embedded defaults)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if logLevel != "" && !slices.Contains(config.LogLevels, logLevel) {
				return &exitError{code: exitUsage, err: fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)}
			}
			cfg, err := app.LoadConfig(cfgPath)
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			if dataDir != "" {
				cfg.DataDir = dataDir
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return failf("--cpuprofile: %v", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return failf("--cpuprofile: %v", err)
				}
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
			if memProfile != "" {
				heapProfileOnUSR1(memProfile)
			}
			err = app.Serve(cfg, app.Options{ConfigPath: cfgPath, DataDir: dataDir, LogLevel: logLevel,
				Version: version, Stderr: os.Stderr, PaceGC: os.Getenv("GOGC") == ""})
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML config file (see `portcullis config default`); re-read on SIGHUP")
	cmd.Flags().StringVar(&dataDir, "data", "", "data directory (overrides data_dir)")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "operational log level: debug, info, warn, error (overrides log_level)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile to FILE until shutdown (for benchmarks)")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write a Go heap profile to FILE on each SIGUSR1 (for benchmarks)")
	return cmd
}

// heapProfileOnUSR1 writes a heap profile to path on each SIGUSR1 (kill
// -USR1 PID), for benchmarks. Sampled every 4 KiB rather than 512 KiB, so
// that objects of a few hundred bytes per connection show up.
func heapProfileOnUSR1(path string) {
	runtime.MemProfileRate = 4096
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			runtime.GC()
			if f, err := os.Create(path); err == nil {
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
	}()
}
