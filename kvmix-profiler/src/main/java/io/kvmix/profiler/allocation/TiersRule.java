package io.kvmix.profiler.allocation;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The reference implementation's rule: three tiers of layers by importance, a fixed width per tier.
 *
 * <p>For each stream separately (keys ranked by key importance, values by value importance; most
 * important first, equal scores in layer order), with {@code L} layers:
 * <ul>
 *   <li>the first {@code (int) (importantFraction * L)} layers of the ranking are "important" and
 *       get {@code bits.important()};</li>
 *   <li>the next {@code (int) (generalFraction * L)} are "general" and get {@code bits.general()};</li>
 *   <li>every other layer gets {@code bits.rest()}.</li>
 * </ul>
 * The counts truncate toward zero in double arithmetic, exactly as the reference's {@code int(0.1 * L)}
 * does. {@link #reference()} is the reference's setting: fractions 0.1 and 0.1, keys 3/3/2 bits,
 * values 4/4/2 bits. With fewer than 10 layers {@code int(0.1 * L) = 0}, so it upgrades nothing and
 * every layer is K2/V2; the allocation then says so in a note ({@link BudgetRule} works for any L).
 * The reference ranks with an unstable sort, so its order among equal scores is unspecified; here
 * it is the lower layer index first.
 *
 * <p>Plan parameters ({@code rule_params}): {@code important_fraction}, {@code general_fraction}
 * (numbers), and {@code k_bits_important}, {@code k_bits_general}, {@code k_bits_rest},
 * {@code v_bits_important}, {@code v_bits_general}, {@code v_bits_rest} (integers).
 *
 * @param importantFraction share of layers in the important tier, in [0, 1]
 * @param generalFraction   share of layers in the general tier, in [0, 1]; the two add up to at most 1
 * @param keyBits           key widths per tier
 * @param valueBits         value widths per tier
 */
public record TiersRule(double importantFraction, double generalFraction, TierBits keyBits, TierBits valueBits)
        implements AllocationRule {

    /** {@link #name()} of this rule, as plans record it. */
    public static final String NAME = "tiers";

    public TiersRule {
        requireFraction("importantFraction", importantFraction);
        requireFraction("generalFraction", generalFraction);
        if (importantFraction + generalFraction > 1) {
            throw new IllegalArgumentException("importantFraction=" + importantFraction + " + generalFraction="
                    + generalFraction + " exceeds 1");
        }
        Objects.requireNonNull(keyBits, "keyBits");
        Objects.requireNonNull(valueBits, "valueBits");
    }

    private static void requireFraction(String field, double fraction) {
        if (!(fraction >= 0 && fraction <= 1)) {
            throw new IllegalArgumentException(field + "=" + fraction + ", must be in [0, 1]");
        }
    }

    /** The reference's rule: 10% important, 10% general; keys 3/3/2 bits, values 4/4/2 bits. */
    public static TiersRule reference() {
        return new TiersRule(0.1, 0.1, new TierBits(3, 3, 2), new TierBits(4, 4, 2));
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public Map<String, Object> params() {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("important_fraction", importantFraction);
        params.put("general_fraction", generalFraction);
        putTierBits(params, "k_bits", keyBits);
        putTierBits(params, "v_bits", valueBits);
        return Collections.unmodifiableMap(params);
    }

    private static void putTierBits(Map<String, Object> params, String prefix, TierBits bits) {
        params.put(prefix + "_important", (long) bits.important());
        params.put(prefix + "_general", (long) bits.general());
        params.put(prefix + "_rest", (long) bits.rest());
    }

    /** Layers in the important tier of a model with {@code layers} layers. */
    public int importantCount(int layers) {
        return (int) (importantFraction * layers);
    }

    /** Layers in the general tier of a model with {@code layers} layers. */
    public int generalCount(int layers) {
        return Math.min((int) (generalFraction * layers), layers - importantCount(layers));
    }

    @Override
    public Allocation allocate(LayerImportance importance, int groupSize, int headDim, String model) {
        Objects.requireNonNull(importance, "importance");
        int layers = importance.layerCount();
        int important = importantCount(layers);
        int general = generalCount(layers);
        int[] keyWidths = tierWidths(importance.keyRanking(), important, general, keyBits);
        int[] valueWidths = tierWidths(importance.valueRanking(), important, general, valueBits);
        List<String> notes = new ArrayList<>();
        if (important + general == 0 && importantFraction + generalFraction > 0) {
            notes.add(layers + " layers: (int) (" + importantFraction + " * " + layers + ") = 0 important and (int) ("
                    + generalFraction + " * " + layers + ") = 0 general layers, so every layer gets the rest widths K"
                    + keyBits.rest() + "/V" + valueBits.rest() + " (the budget rule upgrades layers on any model)");
        }
        return Allocation.fromWidths(this, importance, keyWidths, valueWidths, groupSize, headDim, model, notes);
    }

    /** Widths by layer index, given the layers ranked most important first. */
    private static int[] tierWidths(int[] ranking, int important, int general, TierBits bits) {
        int[] widths = new int[ranking.length];
        for (int rank = 0; rank < ranking.length; rank++) {
            int width;
            if (rank < important) {
                width = bits.important();
            } else if (rank < important + general) {
                width = bits.general();
            } else {
                width = bits.rest();
            }
            widths[ranking[rank]] = width;
        }
        return widths;
    }
}
