package io.kvmix.examples;

import io.kvmix.core.plan.PlanValidationException;
import io.kvmix.examples.bench.BenchCommand;
import io.kvmix.examples.cli.DemoCommand;
import io.kvmix.examples.cli.GenerateCommand;
import io.kvmix.examples.cli.MemoryCommand;
import io.kvmix.examples.cli.PplCommand;
import io.kvmix.examples.cli.ProfileCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.PrintWriter;

/**
 * Entry point of the {@code ./kvmix} launcher. Results go to stdout (one JSON object, printed last, with
 * {@code --json}); logs and progress go to stderr; an error is one line on stderr and a non-zero exit.
 */
@Command(name = "kvmix", mixinStandardHelpOptions = true, version = "kvmix 0.1.0",
        description = "Mixed-precision (KVmix) KV-cache quantization for Llama/Mistral models.",
        subcommands = {DemoCommand.class, ProfileCommand.class, GenerateCommand.class, PplCommand.class,
                MemoryCommand.class, BenchCommand.class,
                CommandLine.HelpCommand.class})
public final class KvmixCli {

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI on stdout/stderr and returns its exit code: 0 success, 1 error, 2 bad usage. */
    public static int run(String... args) {
        return run(new PrintWriter(System.out, true), new PrintWriter(System.err, true), args);
    }

    /** Runs the CLI with the given output and error streams (used by tests and example mains). */
    public static int run(PrintWriter out, PrintWriter err, String... args) {
        CommandLine cli = new CommandLine(new KvmixCli()).setOut(out).setErr(err);
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            commandLine.getErr().println(commandLine.getCommandName() + ": " + oneLine(e));
            commandLine.getErr().flush();
            return 1;
        });
        cli.setParameterExceptionHandler((e, args1) -> {
            CommandLine commandLine = e.getCommandLine();
            commandLine.getErr().println(commandLine.getCommandName() + ": " + e.getMessage()
                    + " (see: kvmix " + (commandLine.getParent() == null ? "" : commandLine.getCommandName() + " ")
                    + "--help)");
            return 2;
        });
        return cli.execute(args);
    }

    /** The message of {@code e} on one line (multi-problem messages joined with "; "). */
    static String oneLine(Throwable e) {
        if (e instanceof PlanValidationException invalid) {
            String problems = String.join("; ", invalid.problems());
            return invalid.source() == null ? problems : invalid.source() + ": " + problems;
        }
        String message = e.getMessage();
        if (message == null || message.isBlank()) {
            message = e.getClass().getSimpleName();
        }
        return message.strip().replaceAll("\\s*\\R\\s*", "; ");
    }
}
