package io.kvmix.profiler.allocation;

import io.kvmix.core.plan.QuantPlan;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;

/**
 * Target average bits per element for keys and for values; the most important layers get the bits
 * the target leaves above a uniform width. Works for any number of layers.
 *
 * <p>Keys and values are allocated independently, by the same steps. With {@code L} layers, target
 * {@code T} and metadata {@code m} bits per element ({@code 32 / G} for keys and
 * {@code 32 / min(G, headDim)} for values when {@link #countMetadata()}, the fp16 scale and minimum
 * of every group; 0 otherwise):
 * <ol>
 *   <li>The code budget is {@code B = (T - m) * L} bits, summed over layers. Widths are whole bits,
 *       so the plan spends {@code S}, the largest integer {@code <= B}, capped at
 *       {@code ceilingBits * L}.</li>
 *   <li>{@code S < floorBits * L} is an {@link IllegalArgumentException} naming the smallest
 *       reachable target, {@code floorBits + m}.</li>
 *   <li>Every layer starts at the uniform base width {@code b = floor(S / L)}, the width every layer
 *       can afford ({@code floorBits <= b <= ceilingBits}).</li>
 *   <li>The {@code S - b * L} bits left (fewer than {@code L}) go to layers in order of importance,
 *       most important first (equal scores in layer order), each raised as far as the bits left and
 *       {@code ceilingBits} allow. So the plan is some layers at {@code ceilingBits}, at most one in
 *       between, the rest at {@code b}, and widths never increase down the ranking.</li>
 * </ol>
 * The achieved average {@code S / L + m} never exceeds the target. When it equals the target (to
 * 1e-9 bits) the allocation has no note for that stream; otherwise a note gives the achieved and the
 * target average and why: the target asks for a fraction of a bit in total, or more than every
 * layer at {@code ceilingBits}. Example: 12 layers, codes only, target 2.25 is 27 bits; base 2 takes
 * 24, the 3 left raise the most important layer to 4 bits and the second to 3.
 *
 * <p>Plan parameters ({@code rule_params}): {@code target_k_bits}, {@code target_v_bits} (numbers),
 * {@code count_metadata} (boolean), {@code floor_bits}, {@code ceiling_bits} (integers).
 *
 * @param targetKeyBits   target average key bits per element, {@code > 0}
 * @param targetValueBits target average value bits per element, {@code > 0}
 * @param countMetadata   whether the targets include the group metadata (FORMAT.md section 5.4)
 * @param floorBits       the narrowest width a layer may get, 1-4
 * @param ceilingBits     the widest width a layer may get, {@code floorBits}-4
 */
public record BudgetRule(double targetKeyBits, double targetValueBits, boolean countMetadata, int floorBits,
                         int ceilingBits) implements AllocationRule {

    /** {@link #name()} of this rule, as plans record it. */
    public static final String NAME = "budget";
    /** The floor of {@link #of}: any width the cache supports. */
    public static final int DEFAULT_FLOOR_BITS = 1;
    /** The ceiling of {@link #of}: the widest width the cache supports. */
    public static final int DEFAULT_CEILING_BITS = 4;
    /** How far a spent total may fall short of the code budget and still count as meeting it, in bits. */
    static final double TOLERANCE_BITS = 1e-9;

    public BudgetRule {
        requirePositive("targetKeyBits", targetKeyBits);
        requirePositive("targetValueBits", targetValueBits);
        if (floorBits < 1 || floorBits > 4) {
            throw new IllegalArgumentException("floorBits=" + floorBits + ", must be 1-4");
        }
        if (ceilingBits < floorBits || ceilingBits > 4) {
            throw new IllegalArgumentException("ceilingBits=" + ceilingBits + ", must be floorBits (" + floorBits
                    + ") to 4");
        }
    }

    private static void requirePositive(String field, double target) {
        if (!(Double.isFinite(target) && target > 0)) {
            throw new IllegalArgumentException(field + "=" + target + ", must be a finite number > 0");
        }
    }

    /**
     * Targets that count metadata (as FORMAT.md section 5.4 and the CLI do), with every width from
     * {@value #DEFAULT_FLOOR_BITS} to {@value #DEFAULT_CEILING_BITS} allowed.
     */
    public static BudgetRule of(double targetKeyBits, double targetValueBits) {
        return new BudgetRule(targetKeyBits, targetValueBits, true, DEFAULT_FLOOR_BITS, DEFAULT_CEILING_BITS);
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public Map<String, Object> params() {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("target_k_bits", targetKeyBits);
        params.put("target_v_bits", targetValueBits);
        params.put("count_metadata", countMetadata);
        params.put("floor_bits", (long) floorBits);
        params.put("ceiling_bits", (long) ceilingBits);
        return Collections.unmodifiableMap(params);
    }

    @Override
    public Allocation allocate(LayerImportance importance, int groupSize, int headDim, String model) {
        Objects.requireNonNull(importance, "importance");
        if (groupSize <= 0) {
            throw new IllegalArgumentException("groupSize=" + groupSize + ", must be a positive multiple of 32");
        }
        if (headDim <= 0) {
            throw new IllegalArgumentException("headDim=" + headDim + ", must be > 0");
        }
        double keyMetadata = countMetadata ? (double) QuantPlan.METADATA_BITS_PER_GROUP / groupSize : 0;
        double valueMetadata = countMetadata
                ? (double) QuantPlan.METADATA_BITS_PER_GROUP / Math.min(groupSize, headDim) : 0;
        StreamWidths keys = allocateStream(new StreamTarget("key", "targetKeyBits", targetKeyBits, keyMetadata),
                importance.keyRanking());
        StreamWidths values = allocateStream(
                new StreamTarget("value", "targetValueBits", targetValueBits, valueMetadata),
                importance.valueRanking());
        List<String> notes = new ArrayList<>();
        keys.note().ifPresent(notes::add);
        values.note().ifPresent(notes::add);
        return Allocation.fromWidths(this, importance, keys.widths(), values.widths(), groupSize, headDim, model,
                notes);
    }

    /**
     * One stream's target.
     *
     * @param stream       "key" or "value", for notes and errors
     * @param field        the target's component name, for errors
     * @param target       average bits per element asked for
     * @param metadataBits metadata bits per element counted against the target (0 for codes only)
     */
    private record StreamTarget(String stream, String field, double target, double metadataBits) {
    }

    /** Widths by layer index, and the note when the target was not met exactly. */
    private record StreamWidths(int[] widths, Optional<String> note) {
    }

    private StreamWidths allocateStream(StreamTarget target, int[] ranking) {
        int layers = ranking.length;
        double codeBudget = (target.target() - target.metadataBits()) * layers;
        long spendable = (long) Math.floor(codeBudget + TOLERANCE_BITS);
        if (spendable < (long) floorBits * layers) {
            throw new IllegalArgumentException(target.field() + "=" + target.target()
                    + " is below the cheapest " + target.stream() + " plan, " + describe(floorBits, target)
                    + " with every layer at floorBits=" + floorBits);
        }
        int spent = (int) Math.min(spendable, (long) ceilingBits * layers);
        int base = spent / layers;
        int left = spent - base * layers;
        int[] widths = new int[layers];
        Arrays.fill(widths, base);
        for (int rank = 0; rank < layers && left > 0; rank++) {
            int raise = Math.min(ceilingBits - base, left);
            widths[ranking[rank]] += raise;
            left -= raise;
        }
        return new StreamWidths(widths, shortfall(target, layers, codeBudget, spent));
    }

    /** Why {@code spent} code bits over {@code layers} layers do not meet the target, if they do not. */
    private Optional<String> shortfall(StreamTarget target, int layers, double codeBudget, int spent) {
        if (codeBudget - spent <= TOLERANCE_BITS) {
            return Optional.empty();
        }
        String achieved = target.stream() + "s: achieved " + describe((double) spent / layers, target)
                + ", target " + format(target.target()) + ": ";
        if (spent == ceilingBits * layers) {
            return Optional.of(achieved + "every layer is at ceilingBits=" + ceilingBits
                    + ", the most this rule can spend");
        }
        return Optional.of(achieved + "the target asks for " + format(codeBudget) + " code bits over " + layers
                + " layers and widths are whole bits, so the plan spends " + spent);
    }

    /** An average with metadata as "3.1875 bits per element (codes 2.1875 + metadata 1)". */
    private String describe(double codeBits, StreamTarget target) {
        String total = format(codeBits + target.metadataBits()) + " bits per element";
        return countMetadata
                ? total + " (codes " + format(codeBits) + " + metadata " + format(target.metadataBits()) + ")"
                : total + " (codes only)";
    }

    /** At most four decimals, no trailing zeros: 3, 2.1875, 0.3333. */
    private static String format(double bits) {
        return BigDecimal.valueOf(bits).setScale(4, RoundingMode.HALF_EVEN).stripTrailingZeros().toPlainString();
    }
}
