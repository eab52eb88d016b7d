import Foundation
import Glibc
import Testing

/// Black-box runs of the real whisperd binary, one nested suite per roster section
/// (Horust's `tests/section_*.rs`). Serialized: they spawn real process trees and watch timing.
@Suite(.serialized) struct IntegrationTests {}

/// Fast defaults so the tests run in seconds; each test adds its own services.
let fastDefaults = """
    version: 1
    defaults:
      restart_delay: 50ms
      restart_delay_max: 1s
      stop_grace: 2s
      health: {ready: started, ready_timeout: 5s, watchdog: off}

    """

extension IntegrationTests {
    @Suite struct RestartSection {
        @Test func sigkilledChild_comesBackWithANewPid() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let first = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let firstEnvironment = try #require(environment(of: first))
            kill(first, SIGKILL)
            let second = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running", occurrence: 2)))
            #expect(second != first)
            #expect(!isAlive(first), "killed and reaped, not left a zombie")
            #expect(isAlive(second))
            // The loop left the new program its CPU through the restart (SCHED_BATCH), and
            // neither the program nor, once the restart is done, the loop keeps that policy.
            #expect(schedulingPolicy(of: second) == 0)
            #expect(eventually { schedulingPolicy(of: whisperd.pid) == 0 })
            // A restart reuses the launch its service's last start made: the same environment.
            #expect(environment(of: second) == firstEnvironment)
            #expect(firstEnvironment["NOTIFY_SOCKET"]?.hasSuffix("/elena.sock") == true)
            let elena = try #require(whisperd.character("elena"))
            #expect(elena["restarts"] as? Int == 1)
            #expect((elena["last_exit"] as? [String: Any])?["reason"] as? String == "Signaled(SIGKILL)")
        }

        /// A restart reuses the program its service's last start found on PATH; once that fails
        /// (the program moved), the next start looks for it again.
        @Test func aProgramThatMovedOnPATH_isFoundAgain_afterTheRestartThatMissedIt() throws {
            let scratch = Scratch()
            let first = scratch.write("a/wanderer", "#!/bin/sh\nexec sleep 300\n", executable: true)
            scratch.write("b/.keep", "")
            scratch.write(
                "roster.yaml",
                fastDefaults + "characters:\n  wanderer: {command: [wanderer], env: {PATH: '\(scratch.path)/a:\(scratch.path)/b:/usr/bin:/bin'}}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("wanderer: starting -> running")))
            #expect(rename(first, scratch.path + "/b/wanderer") == 0)
            kill(pid, SIGKILL)
            #expect(whisperd.waitFor("wanderer:", "cannot start", "\(scratch.path)/a/wanderer") != nil)
            let again = WhisperdProcess.pid(in: whisperd.waitFor("wanderer: starting -> running", occurrence: 2))
            #expect(again != nil && again != pid)
        }

        @Test func childThatExitsAtOnce_backsOffWithGrowingDelays_thenCrashLoops() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      flaky:
                        command: [sh, -c, 'exit 3']
                        restart_delay: 40ms
                        restart_delay_max: 2s
                        restart_budget: {max: 3, window: 60s}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let crashLoop = whisperd.waitFor("flaky:", "crash loop", timeout: 15)
            #expect(crashLoop != nil)
            let delays = whisperd.log.filter { $0.contains("flaky: ") && $0.contains("-> backoff") }
                .compactMap { line -> Double? in
                    guard let range = line.range(of: "restart in ") else { return nil }
                    let text = line[range.upperBound...]
                    if text.hasSuffix("ms") { return Double(text.dropLast(2)) }
                    return nil
                }
            #expect(delays.count == 3, "backoff lines: \(delays)")
            #expect(zip(delays, delays.dropFirst()).allSatisfy { $0 < $1 }, "delays should grow: \(delays)")
            #expect(whisperd.waitFor("flaky: ", "-> crashloop", "Error(3)", "restart in 2s") != nil)
            let flaky = try #require(whisperd.character("flaky"))
            #expect(flaky["state"] as? String == "crashloop")
            #expect(flaky["crash_loop"] as? Bool == true)
            #expect((flaky["last_exit"] as? [String: Any])?["reason"] as? String == "Error(3)")
        }

        @Test func missingProgram_isReportedAsSpawnFailed() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  ghost: {command: [no-such-program-xyz], restart: 'no'}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("ghost:", "command not found") != nil)
            #expect(whisperd.waitFor("ghost: starting -> failed", "SpawnFailed") != nil)
        }

        /// The spawn returns before the child's exec; a step of the child's set-up that fails
        /// (here: its user may not enter its working directory) is still a spawn failure, named.
        @Test(.enabled(if: getuid() == 0, "characters are users of their own only under root"))
        func aSetUpStepThatFailsInTheChild_isReportedAsSpawnFailed_withTheStep() throws {
            let scratch = Scratch()
            let locked = scratch.path + "/locked"
            #expect(mkdir(locked, 0o700) == 0)
            scratch.write(
                "roster.yaml", fastDefaults + "characters:\n  shut-out: {command: [sleep, '30'], working_dir: \(locked), restart: 'no'}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("shut-out:", "cannot start", "chdir \(locked) as uid", "Permission denied") != nil)
            #expect(whisperd.waitFor("shut-out: starting -> failed", "SpawnFailed(errno 13)") != nil)
        }
    }

    @Suite struct HealthSection {
        @Test func childThatNeverSendsREADY_isStoppedAfterReadyTimeout() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      mute:
                        command: [sleep, '300']
                        health: {ready: notify, ready_timeout: 300ms}
                        restart_delay: 5s
                        restart_delay_max: 5s
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("mute: starting -> stopping", "ReadyTimeout") != nil)
            #expect(whisperd.waitFor("mute: stopping -> backoff", "ReadyTimeout") != nil)
            let health = try #require(whisperd.get("/health"))
            #expect(health.0 == 503)
        }

        @Test func notifyReady_andWatchdogSilence_restartWithWatchdogTimeout() throws {
            let scratch = Scratch()
            // Ready, two pings, then silence.
            scratch.write(
                "pinger.sh",
                """
                #!/bin/sh
                whisperd notify READY=1 "STATUS=pinging"
                whisperd notify WATCHDOG=1
                sleep 0.1
                whisperd notify WATCHDOG=1 X_WHISPERD_FACET=llm:degraded:slow
                exec sleep 300
                """, executable: true)
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      pinger:
                        command: [./pinger.sh]
                        health: {ready: notify, watchdog: 400ms}
                        restart_delay: 3s
                        restart_delay_max: 3s
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("pinger: starting -> running", "READY=1") != nil)
            let status = try #require(whisperd.character("pinger"))
            #expect(status["status_text"] as? String == "pinging")
            #expect(whisperd.waitFor("pinger: running -> stopping", "WatchdogTimeout") != nil)
            #expect(whisperd.waitFor("pinger: stopping -> backoff", "WatchdogTimeout") != nil)
            // Facets outlive the run that reported them, so status still says what the child last knew.
            #expect((whisperd.character("pinger")?["facets"] as? [String: String])?["llm"] == "degraded:slow")
        }

        @Test func httpReadiness_usesTheCharactersPort() throws {
            let scratch = Scratch()
            let port = freePort()
            scratch.write("characters/ryan/character.md", "You are Ryan.\n")
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      ryan:
                        port: \(port)
                        health: {ready: http, http: {path: /health, interval: 1s}}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("ryan: starting -> running", "HTTP /health passed") != nil)
            let (code, body) = try #require(httpGet(port: port, path: "/health"))
            #expect(code == 200)
            #expect(body.contains(#""status":"healthy""#))
            #expect(whisperd.get("/health")?.0 == 200)
        }

        @Test func datagramsFromOutsideTheTree_areRejected() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300'], health: {ready: notify, ready_timeout: 30s}}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            whisperd.waitFor("elena: stopped -> starting")
            // The test process is not in elena's process group: READY=1 must not count.
            let socket = scratch.path + "/run/notify/elena.sock"
            #expect(eventually { FileManager.default.fileExists(atPath: socket) })
            #expect(sendDatagram("READY=1", to: socket))
            #expect(eventually { (whisperd.character("elena")?["notify_rejected"] as? Int) == 1 })
            #expect(whisperd.character("elena")?["state"] as? String == "starting")
        }
    }

    @Suite struct DependencySection {
        @Test func after_waitsForAJob_andForReadiness() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    jobs:
                      migrate:
                        command: [sh, -c, 'sleep 0.2; echo migrated >> $STATE_DIRECTORY/migrations.txt']
                    characters:
                      llm:
                        command: [sh, -c, 'sleep 0.3; whisperd notify READY=1; exec sleep 300']
                        health: {ready: notify}
                      elena:
                        command: [sleep, '300']
                        after: [migrate, llm]
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: stopped -> waiting", "waiting for migrate") != nil)
            #expect(whisperd.waitFor("migrate: running -> exited", "Completed") != nil)
            #expect(whisperd.waitFor("llm: starting -> running", "READY=1") != nil)
            #expect(whisperd.waitFor("elena: waiting -> starting") != nil)
            let order = whisperd.log
            let migrated = order.firstIndex { $0.contains("migrate: running -> exited") }!
            let llmReady = order.firstIndex { $0.contains("llm: starting -> running") }!
            let elenaStart = order.firstIndex { $0.contains("elena: waiting -> starting") }!
            #expect(elenaStart > migrated && elenaStart > llmReady)
        }

        @Test func afterMap_startedDoesNotWaitForReadiness_andRestartTrueFollowsAnOperatorRestart() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      lavalink:
                        command: [sleep, '300']
                        health: {ready: notify, ready_timeout: 60s}
                      gateway:
                        command: [sleep, '300']
                        after: {lavalink: {condition: service_started, restart: true}}
                      bystander:
                        command: [sleep, '300']
                        after: {lavalink: started, redis: {condition: healthy, required: false}}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            // lavalink never says READY=1, yet both start: `started` is enough, and redis may be absent.
            let gateway = try #require(WhisperdProcess.pid(in: whisperd.waitFor("gateway: starting -> running")))
            let bystander = try #require(WhisperdProcess.pid(in: whisperd.waitFor("bystander: starting -> running")))
            #expect(whisperd.character("lavalink")?["state"] as? String == "starting")

            let restart = try whisperd.ctl("restart", "lavalink", "--no-wait")
            #expect(restart.code == 0, "\(restart.stderr)")
            #expect(whisperd.waitFor("gateway:", "restarted with a dependency") != nil)
            let newGateway = try #require(WhisperdProcess.pid(in: whisperd.waitFor("gateway: starting -> running", occurrence: 2)))
            #expect(newGateway != gateway)
            #expect(whisperd.character("bystander")?["pid"] as? Int == Int(bystander), "bystander did not ask for restart: true")
        }

        @Test func profiles_switchedAtRunTime_startAndStopTheirServices_andAreRemembered() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      postgres: {command: [sleep, '300']}
                      elena: {command: [sleep, '300'], profiles: [bots, all], after: [postgres]}
                      tool: {command: [sleep, '300'], profiles: [tools], after: [needsdb]}
                      needsdb: {command: [sleep, '300'], profiles: [db]}
                    """)
            do {
                let whisperd = try WhisperdProcess(scratch: scratch)
                #expect(whisperd.waitFor("postgres: starting -> running") != nil)
                #expect(whisperd.character("elena") == nil, "elena is only in profiles bots and all")

                let start = try whisperd.ctl("start", "--profile", "bots")
                #expect(start.code == 0, "\(start.stderr)")
                #expect(start.stdout.contains("start elena"))
                #expect(whisperd.character("elena")?["ready"] as? Bool == true, "start --profile returns once its services are ready")
                #expect(scratch.read("state/profiles.json")?.contains("\"bots\" : \"on\"") == true)

                // A switch that would break the roster changes nothing.
                let broken = try whisperd.ctl("start", "--profile", "tools")
                #expect(broken.code != 0)
                #expect(broken.stderr.contains("`needsdb` runs only with profile db"), "\(broken.stderr)")
                #expect(whisperd.character("tool") == nil)
                whisperd.terminate()
            }
            // A new whisperd keeps the switch made at run time.
            let again = try WhisperdProcess(scratch: scratch)
            defer { again.terminate() }
            let elena = try #require(WhisperdProcess.pid(in: again.waitFor("elena: starting -> running")))
            let stop = try again.ctl("stop", "--profile", "bots")
            #expect(stop.code == 0, "\(stop.stderr)")
            #expect(again.waitFor("elena: stopping -> stopped") != nil)
            #expect(eventually { again.character("elena") == nil })
            #expect(!isAlive(elena))
            #expect(scratch.read("state/profiles.json")?.contains("\"bots\" : \"off\"") == true)
        }

        @Test func replicas_runAsInstances_scaleLive_andTheScaleIsRemembered() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      gateway:
                        command: [sh, -c, 'echo "instance $REPLICA_INDEX of $REPLICA_COUNT on $API_PORT"; exec sleep 300']
                        replicas: 3
                        port: 18100
                    """)
            do {
                let whisperd = try WhisperdProcess(scratch: scratch)
                for index in 0..<3 { #expect(whisperd.waitFor("gateway-\(index): starting -> running") != nil) }
                #expect(eventually { scratch.read("logs/gateway-2.log")?.contains("instance 2 of 3 on 18102") == true })
                let kept = try #require(whisperd.character("gateway-0")?["pid"] as? Int)
                let scale = try whisperd.ctl("scale", "gateway", "1")
                #expect(scale.code == 0, "\(scale.stderr)")
                #expect(eventually { whisperd.character("gateway-2") == nil && whisperd.character("gateway-1") == nil })
                // The one left is a different definition now (REPLICA_COUNT 1): restarted once, by design.
                #expect(whisperd.character("gateway-0")?["ready"] as? Bool == true)
                #expect(whisperd.character("gateway-0")?["pid"] as? Int != kept)
                let unknown = try whisperd.ctl("scale", "ghost", "2")
                #expect(unknown.code != 0 && unknown.stderr.contains("no character named ghost"))
                whisperd.terminate()
            }
            let again = try WhisperdProcess(scratch: scratch)
            defer { again.terminate() }
            #expect(again.waitFor("gateway-0: starting -> running") != nil)
            #expect(again.character("gateway-1") == nil, "the scale made at run time is kept")
            let up = try again.ctl("scale", "gateway", "2")
            #expect(up.code == 0, "\(up.stderr)")
            #expect(again.character("gateway-1")?["ready"] as? Bool == true, "scale returns once the new instances are ready")
        }

        @Test func profileFlag_selectsServicesAtStart_andCheckSaysWhatIsLeftOut() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + "characters:\n  a: {command: [sleep, '300'], profiles: [x]}\n  b: {command: [sleep, '300'], profiles: [y]}\n")
            let check = try runCommand(whisperdBinary(), ["--roster", scratch.path + "/roster.yaml", "--check", "--profile", "x"])
            #expect(check.code == 0)
            #expect(check.stdout.contains("1 character, 0 jobs; not in the active profiles: b"), "\(check.stdout)")
            let bad = try runCommand(whisperdBinary(), ["--roster", scratch.path + "/roster.yaml", "--check", "--profile=-bad"])
            #expect(bad.code != 0 && bad.stderr.contains("not a profile name"))
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--profile", "y,x"])
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("a: starting -> running") != nil)
            #expect(whisperd.waitFor("b: starting -> running") != nil)
        }

        @Test func oncePerRevisionJob_skipsAfterRestart_andRerunsWhenChanged() throws {
            let scratch = Scratch()
            func roster(_ version: String) -> String {
                fastDefaults + """
                    jobs:
                      migrate:
                        command: [sh, -c, 'echo run >> $STATE_DIRECTORY/runs-\(version).txt']
                    characters:
                      elena: {command: [sleep, '300'], after: [migrate]}
                    """
            }
            scratch.write("roster.yaml", roster("v1"))
            do {
                let first = try WhisperdProcess(scratch: scratch)
                #expect(first.waitFor("elena: waiting -> starting") != nil)
                first.terminate()
            }
            do {
                let second = try WhisperdProcess(scratch: scratch)
                #expect(second.waitFor("migrate:", "already done for this revision") != nil)
                #expect(second.waitFor("elena: stopped -> starting") != nil)
                second.terminate()
            }
            #expect(scratch.read("state/migrate/runs-v1.txt") == "run\n")
            scratch.write("roster.yaml", roster("v2"))
            let third = try WhisperdProcess(scratch: scratch)
            defer { third.terminate() }
            #expect(third.waitFor("migrate: running -> exited") != nil)
            #expect(scratch.read("state/migrate/runs-v2.txt") == "run\n")
        }
    }

    @Suite struct ReloadSection {
        @Test func sighup_appliesTheDiff() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      keep: {command: [sleep, '300']}
                      change: {command: [sleep, '300'], env: {MOOD: calm}}
                      remove: {command: [sleep, '300']}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let keep = WhisperdProcess.pid(in: whisperd.waitFor("keep: starting -> running"))
            let change = WhisperdProcess.pid(in: whisperd.waitFor("change: starting -> running"))
            let remove = try #require(WhisperdProcess.pid(in: whisperd.waitFor("remove: starting -> running")))
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      keep: {command: [sleep, '300']}
                      change: {command: [sleep, '300'], env: {MOOD: bright}}
                      added: {command: [sleep, '300']}
                    """)
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("added: starting -> running") != nil)
            #expect(whisperd.waitFor("remove:", "removed") != nil)
            let changed = WhisperdProcess.pid(in: whisperd.waitFor("change: starting -> running", occurrence: 2))
            #expect(changed != nil && changed != change)
            // Not the launch of its last start: the new roster's environment.
            #expect(changed.flatMap(environment(of:))?["MOOD"] == "bright")
            #expect(!isAlive(remove))
            #expect(whisperd.character("keep")?["pid"] as? Int == keep.map(Int.init))
            #expect(whisperd.character("remove") == nil)
        }

        @Test func sighupWithABrokenRoster_changesNothing() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running"))
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300'], limits: {memory: 1K}}\n  aria: {comand: x}\n")
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("reload:", "the running fleet is unchanged") != nil)
            #expect(whisperd.count("reload:", "below the floor") == 1)
            #expect(whisperd.count("reload:", "unknown key `comand`") == 1)
            #expect(whisperd.character("elena")?["pid"] as? Int == pid.map(Int.init))
            #expect(whisperd.character("aria") == nil)
        }
    }

    @Suite struct TerminationSection {
        @Test func sigterm_stopsInReverseDependencyOrder_andLeavesNoProcess() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      base: {command: [sleep, '300']}
                      stubborn:
                        # Ignores SIGTERM: whisperd must SIGKILL the group after the grace period.
                        command: [sh, -c, 'trap "" TERM; sleep 300 & sleep 300 & wait']
                        stop_grace: 500ms
                        after: [base]
                      polite: {command: [sleep, '300'], after: [base]}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            whisperd.waitFor("stubborn: starting -> running")
            whisperd.waitFor("polite: starting -> running")
            let children = whisperd.childPIDs
            let grandchildren = descendants(of: children)
            let started = Date()
            whisperd.signal(SIGTERM)
            #expect(whisperd.waitForExit() == 0)
            let elapsed = Date().timeIntervalSince(started)
            #expect(elapsed < 3, "stop took \(elapsed)s")
            let log = whisperd.log
            let baseStop = log.firstIndex { $0.contains("base: running -> stopping") }
            let politeStopped = log.firstIndex { $0.contains("polite: stopping -> stopped") }
            let stubbornStopped = log.firstIndex { $0.contains("stubborn: stopping -> stopped") }
            #expect(baseStop != nil && politeStopped != nil && stubbornStopped != nil)
            if let baseStop, let politeStopped, let stubbornStopped {
                #expect(baseStop > politeStopped && baseStop > stubbornStopped)
            }
            #expect(log.contains { $0.contains("every service stopped") })
            for pid in children.union(grandchildren) { #expect(!isAlive(pid), "pid \(pid) survived") }
        }
    }

    @Suite struct LogsSection {
        @Test func outputIsTimestamped_andRotatedAtTheSizeLimit() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      chatty:
                        command: [sh, -c, 'i=0; while [ $i -lt 400 ]; do echo "line $i padded to make it longer than before"; i=$((i+1)); done; echo oops >&2; exec sleep 300']
                        logs: {max_size: 4K, max_files: 3}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            whisperd.waitFor("chatty: starting -> running")
            #expect(eventually { scratch.read("logs/chatty.log")?.contains("stderr oops") == true })
            let current = try #require(scratch.read("logs/chatty.log"))
            let first = try #require(scratch.read("logs/chatty.log.1"))
            #expect(scratch.read("logs/chatty.log.2") != nil)
            #expect(scratch.read("logs/chatty.log.3") == nil)
            for file in [current, first] { #expect(file.utf8.count <= 4096) }
            let sample = try #require(first.split(separator: "\n").first)
            // 2026-11-23T12:00:00.123Z stdout line N ...
            #expect(sample.count > 30 && sample.dropFirst(24).hasPrefix(" stdout line "), "\(sample)")
            #expect(current.contains("line 399"))
            #expect(whisperd.character("chatty")?["log_lines_dropped"] as? Int == 0)
        }
    }

    @Suite struct EnvironmentSection {
        @Test func environmentPrecedence_laterLayersWin() throws {
            let scratch = Scratch()
            scratch.write(".env", "LAYER=env-file\nFROM_FILE=yes\nAPI_PORT=1\n")
            scratch.write(".env.extra", "LAYER=second-file\n")
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      envy:
                        port: 18123
                        command: [sh, -c, 'env > $STATE_DIRECTORY/env.txt; exec sleep 300']
                        env_file: [.env, .env.extra]
                        env: {ONLY_ROSTER: r}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            whisperd.waitFor("envy: starting -> running")
            #expect(eventually { scratch.read("state/envy/env.txt")?.contains("NOTIFY_SOCKET=") == true })
            let lines = Set((scratch.read("state/envy/env.txt") ?? "").split(separator: "\n").map(String.init))
            #expect(lines.contains("LAYER=second-file"))
            #expect(lines.contains("FROM_FILE=yes"))
            #expect(lines.contains("ONLY_ROSTER=r"))
            #expect(lines.contains("API_PORT=18123"))
            #expect(lines.contains("WHISPERD_CHARACTER=envy"))
            #expect(lines.contains("NOTIFY_SOCKET=\(scratch.path)/run/notify/envy.sock"))
            #expect(lines.contains { $0.hasPrefix("PATH=") })
            // Only the base layer comes from whisperd's own environment.
            #expect(!lines.contains { $0.hasPrefix("WHISPERD_TEST_LEAK=") })
        }

        @Test func charactersAndTheLoop_keepTheNiceValueWhisperdWasStartedWith() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  calm: {command: [sh, -c, 'nice > $STATE_DIRECTORY/nice.txt; exec sleep 300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            whisperd.waitFor("calm: starting -> running")
            errno = 0
            let started = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
            #expect(errno == 0)
            #expect(eventually { scratch.read("state/calm/nice.txt") != nil && scratch.read("state/calm/nice.txt")!.hasSuffix("\n") })
            #expect(scratch.read("state/calm/nice.txt")?.trimmingCharacters(in: .whitespacesAndNewlines) == String(started))
            // /proc/PID/stat field 19 is the nice value of the main (loop) thread.
            let stat = try String(contentsOfFile: "/proc/\(whisperd.pid)/stat", encoding: .utf8)
            let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
            let loopNice = Int32(fields[16])
            #expect(loopNice == started, "the loop does not run above the characters: it would take a new child's CPU")
        }
    }

    @Suite struct WorkerSection {
        @Test func builtInWorker_becomesReady_andServesHealth() throws {
            let scratch = Scratch()
            let port = freePort()
            scratch.write("characters/elena/character.md", "You are Elena, a marine biologist.\n")
            scratch.write(
                "roster.yaml",
                """
                characters:
                  elena:
                    port: \(port)
                    health: {watchdog: 1s}
                """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: starting -> running", "READY=1") != nil)
            #expect(whisperd.waitFor("startup complete: 1/1 characters ready") != nil)
            let (code, body) = try #require(httpGet(port: port, path: "/health"))
            #expect(code == 200 && body.contains("healthy"))
            let elena = try #require(whisperd.character("elena"))
            #expect((elena["facets"] as? [String: String])?["api"] == "ok")
            // Pings keep it alive past several watchdog intervals.
            let pid = elena["pid"] as? Int
            Thread.sleep(forTimeInterval: 2.5)  // the thing under test is the absence of an event
            #expect(whisperd.character("elena")?["pid"] as? Int == pid)
            #expect(whisperd.count("WatchdogTimeout") == 0)
        }

        @Test func builtInWorker_whoseCharacterFileVanished_exitsWithError2_andSaysWhyInItsLog() throws {
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            scratch.write(
                "roster.yaml",
                fastDefaults + "characters:\n  elena: {port: \(freePort()), restart_delay: 2s, restart_delay_max: 2s, health: {ready: notify}}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            // The pre-flight passed at start; now the file goes and the worker restarts.
            try FileManager.default.removeItem(atPath: scratch.path + "/characters/elena/character.md")
            kill(pid, SIGKILL)
            #expect(whisperd.waitFor("elena: starting -> backoff", "Error(2)") != nil)
            #expect(eventually { scratch.read("logs/elena.log")?.contains("elena/character.md") == true })
            #expect((whisperd.character("elena")?["last_exit"] as? [String: Any])?["reason"] as? String == "Error(2)")
        }

        @Test func workerRunDirectly_withoutCharacterFile_exitsNonZero() throws {
            let scratch = Scratch()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: whisperdBinary())
            process.arguments = ["worker", "nobody"]
            process.environment = ["WHISPERD_CHARACTERS_DIR": scratch.path, "API_PORT": "1"]
            let pipe = Pipe()
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 2)
            #expect(output.contains("nobody/character.md"))
        }
    }

    @Suite struct SystemdSection {
        @Test func whisperdTellsItsParent_READY_thenSTOPPING() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            // Play systemd: a datagram socket whisperd finds through NOTIFY_SOCKET.
            let listener = try DatagramListener(path: scratch.path + "/systemd.sock")
            let whisperd = try WhisperdProcess(
                scratch: scratch, environment: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "400000"])
            defer { whisperd.terminate() }
            let ready = listener.receive(containing: "READY=1")
            #expect(ready?.contains("STATUS=1/1 characters ready") == true)
            #expect(listener.receive(containing: "WATCHDOG=1") != nil)
            whisperd.signal(SIGTERM)
            #expect(listener.receive(containing: "STOPPING=1") != nil)
            #expect(whisperd.waitForExit() == 0)
        }

        @Test func systemdsDirectoryVariables_placeStateSocketsAndLogs() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sh, -c, 'echo hello; exec sleep 300']}\n")
            let whisperd = try WhisperdProcess(
                scratch: scratch,
                environment: [
                    "STATE_DIRECTORY": scratch.path + "/sd-state", "RUNTIME_DIRECTORY": scratch.path + "/sd-run",
                    "LOGS_DIRECTORY": scratch.path + "/sd-logs:" + scratch.path + "/second",
                ],
                directoryFlags: false)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: starting -> running") != nil)
            #expect(whisperd.waitFor("control socket \(scratch.path)/sd-run/control.sock") != nil)
            #expect(whisperd.log.contains { $0.contains("state \(scratch.path)/sd-state") && $0.contains("logs \(scratch.path)/sd-logs)") })
            #expect(eventually { scratch.read("sd-logs/elena.log")?.contains("stdout hello") == true })
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "/.whisperd"))
        }

        @Test func journalFlagWithoutAJournal_saysSo_andKeepsTheFiles() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sh, -c, 'echo hello; exec sleep 300']}\n")
            let journalRuns = FileManager.default.fileExists(atPath: "/run/systemd/journal/socket")
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--journal"])
            defer { whisperd.terminate() }
            #expect(
                whisperd.waitFor(journalRuns ? "also goes to the journal" : "--journal: no journal is running") != nil)
            #expect(eventually { scratch.read("logs/elena.log")?.contains("stdout hello") == true })
        }

        /// The unit as shipped: `systemd-analyze verify` clean (any stderr is a failure: it exits
        /// 0 on warnings) and the hardening not eroded (`systemd-analyze security` below 3.0).
        @Test func shippedUnitVerifiesClean_andStaysHardened() throws {
            let scratch = Scratch()
            let root = scratch.path + "/root"
            let unit = repositoryRoot() + "/systemd/whisperd.service"
            // A root with the unit's binaries and the targets it names, as on an installed host.
            for directory in ["usr/local/bin", "bin", "etc/systemd/system", "usr/lib/systemd"] {
                try FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
            }
            let copies = [
                (whisperdBinary(), "usr/local/bin/whisperd"), (whisperctlBinary(), "usr/local/bin/whisperctl"),
                ("/bin/kill", "bin/kill"), (unit, "etc/systemd/system/whisperd.service"),
                ("/usr/lib/systemd/system", "usr/lib/systemd/system"),
            ]
            for (source, destination) in copies {
                let copy = try runCommand("/bin/cp", ["-R", source, root + "/" + destination])
                try #require(copy.code == 0, "\(copy.stderr)")
            }
            let verify = try runCommand(
                "/usr/bin/systemd-analyze", ["verify", "--root=\(root)", "/etc/systemd/system/whisperd.service"])
            #expect(verify.code == 0)
            #expect(verify.stderr.isEmpty, "\(verify.stderr)")
            let security = try runCommand(
                "/usr/bin/systemd-analyze", ["security", "--offline=yes", "--no-pager", "--root=\(root)", "whisperd.service"])
            let summary = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") } ?? ""
            let exposure = summary.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }
            #expect(exposure != nil && exposure! < 3.0, "\(summary)")
        }
    }

    @Suite struct CheckSection {
        @Test func checkExitsZeroOrOne_listingEveryProblem() throws {
            let scratch = Scratch()
            let good = scratch.write("good.yaml", "characters:\n  elena: {command: [sleep, '1']}\n")
            let bad = scratch.write("bad.yaml", "characters:\n  elena: {command: [sleep, '1'], port: 0}\n  Bad: {}\n")
            let (goodCode, goodOutput) = runWhisperd(["--check", "--roster", good])
            #expect(goodCode == 0)
            #expect(goodOutput.contains("ok (1 character, 0 jobs)"))
            let (badCode, badOutput) = runWhisperd(["--check", "--roster", bad])
            #expect(badCode == 1)
            #expect(badOutput.contains("2 problems") || badOutput.contains("3 problems"))
            #expect(badOutput.contains("bad.yaml:2: characters.elena.port"))
            #expect(badOutput.contains("characters.Bad"))
        }
    }
}

/// whisperd run to completion: exit status and stdout + stderr.
func runWhisperd(_ arguments: [String]) -> (Int32, String) {
    do {
        let result = try runCommand(whisperdBinary(), arguments)
        return (result.code, result.stdout + result.stderr)
    } catch {
        return (-1, "\(error)")
    }
}

/// Every live descendant of the given pids (from /proc), to prove none survives a stop.
func descendants(of roots: Set<Int32>) -> Set<Int32> {
    var parents: [Int32: Int32] = [:]
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, let parent = Int32(fields[1]) { parents[pid] = parent }
    }
    var result: Set<Int32> = []
    var frontier = roots
    while !frontier.isEmpty {
        let next = Set(parents.filter { frontier.contains($0.value) }.keys).subtracting(result)
        result.formUnion(next)
        frontier = next
    }
    return result
}

func sendDatagram(_ message: String, to path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = unixAddress(path)
    let sent = message.withCString { text in
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, text, strlen(text), 0, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
    return sent > 0
}

/// A bound datagram socket standing in for systemd's notify socket.
final class DatagramListener {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = unixAddress(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram containing `fragment` (others are skipped); nil after 10 s of silence.
    func receive(containing fragment: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return nil }
            let text = String(decoding: buffer[0..<count], as: UTF8.self)
            if text.contains(fragment) { return text }
        }
    }

    /// Every datagram that arrives until `stop` returns true, then for `grace` seconds more.
    func receiveAll(grace: Double, stop: () -> Bool) -> [String] {
        var received: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var graceEnds: Date?
        while true {
            if graceEnds == nil, stop() { graceEnds = Date().addingTimeInterval(grace) }
            if let graceEnds, Date() >= graceEnds { return received }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 50) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 { received.append(String(decoding: buffer[0..<count], as: UTF8.self)) }
        }
    }

    deinit {
        close(fd)
        unlink(path)
    }
}

func unixAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
    }
    return address
}
