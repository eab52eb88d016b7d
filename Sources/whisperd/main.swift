import ArgumentParser
import WhisperSystem

// First, while the main thread is the only thread: block the signals this mode reads from its
// signalfd, so every thread started later (Foundation, curl, the worker pool, Swift
// concurrency) inherits the mask. A thread without it would let SIGTERM kill the process
// instead of starting the drain (issue 28).
Whisperd.handledSignals(arguments: CommandLine.arguments)?.blockBeforeAnyThreadStarts()
Whisperd.main()
