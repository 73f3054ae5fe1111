package io.kvmix.core.parallel;

import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Splits a range of independent work items into one contiguous chunk per core, runs the first chunk on
 * the calling thread and the others on resident worker threads, and waits for all of them.
 *
 * <p>Every CPU kernel (attention, matmul, the dense baseline) runs on these same threads. Workers spin
 * briefly for the next job before parking: kernels of a forward pass come back to back, and waking a
 * parked thread (an idle virtual CPU) was measured to cost more than a whole sub-millisecond attention
 * call; a parallel stream on the common fork-join pool was 2.5x slower than this for such calls.
 * Concurrent callers do not wait for each other: whoever finds the workers busy runs serially.
 */
public final class Parallel {
    /** Threads used, including the caller: the number of available processors. */
    public static final int THREADS = Math.max(1, Runtime.getRuntime().availableProcessors());

    /** How long an idle worker polls for the next job before parking. */
    private static final long SPIN_NANOS = 1_000_000;

    private static final ReentrantLock DISPATCH = new ReentrantLock();
    private static final Worker[] WORKERS = new Worker[THREADS - 1];

    static {
        for (int i = 0; i < WORKERS.length; i++) {
            WORKERS[i] = new Worker(i + 1);
            WORKERS[i].start();
        }
    }

    private Parallel() {
    }

    /** Work on items {@code from .. to - 1}. */
    @FunctionalInterface
    public interface RangeBody {
        void run(int from, int to);
    }

    /**
     * Runs {@code body} over {@code [0, count)} in at most {@link #THREADS} contiguous chunks. Nested or
     * concurrent calls run serially. An exception in any chunk is rethrown after every chunk has ended.
     */
    public static void forRange(int count, RangeBody body) {
        int chunks = Math.min(THREADS, count);
        if (chunks <= 1 || Thread.currentThread() instanceof Worker || !DISPATCH.tryLock()) {
            if (count > 0) {
                body.run(0, count);
            }
            return;
        }
        try {
            for (int c = 1; c < chunks; c++) {
                WORKERS[c - 1].submit(body, (int) ((long) count * c / chunks), (int) ((long) count * (c + 1) / chunks));
            }
            Throwable failure = null;
            try {
                body.run(0, count / chunks);
            } catch (Throwable e) {
                failure = e;
            }
            for (int c = 1; c < chunks; c++) {
                Throwable workerFailure = WORKERS[c - 1].await();
                if (failure == null) {
                    failure = workerFailure;
                }
            }
            if (failure instanceof RuntimeException e) {
                throw e;
            }
            if (failure instanceof Error e) {
                throw e;
            }
        } finally {
            DISPATCH.unlock();
        }
    }

    /** A resident thread that runs one chunk per job. */
    private static final class Worker extends Thread {
        private volatile RangeBody body;
        private volatile int from;
        private volatile int to;
        private volatile long submitted;
        private volatile long completed;
        private volatile Throwable failure;

        Worker(int index) {
            super("kvmix-worker-" + index);
            setDaemon(true);
        }

        void submit(RangeBody job, int jobFrom, int jobTo) {
            body = job;
            from = jobFrom;
            to = jobTo;
            failure = null;
            submitted = submitted + 1;
            LockSupport.unpark(this);
        }

        Throwable await() {
            long target = submitted;
            while (completed != target) {
                Thread.onSpinWait();
            }
            return failure;
        }

        @Override
        public void run() {
            long done = 0;
            while (true) {
                long idleSince = System.nanoTime();
                while (submitted == done) {
                    if (System.nanoTime() - idleSince < SPIN_NANOS) {
                        Thread.onSpinWait();
                    } else {
                        LockSupport.park(this);
                    }
                }
                done = submitted;
                try {
                    body.run(from, to);
                } catch (Throwable e) {
                    failure = e;
                }
                completed = done;
            }
        }
    }
}
