package io.kvmix.core.quant;

import java.util.List;

/**
 * A code width of the packed cache, and the one place that owns its packing facts.
 *
 * <p>Codes are packed into little-endian 32-bit words in <em>runs</em> of 32 consecutive codes
 * along a matrix's pack axis (see FORMAT.md). A width is made of one or more bit <em>planes</em>;
 * a plane of width {@code w} stores {@code 32 / w} codes per word, so a run of 32 codes costs
 * exactly {@code bits} words for every width:
 * <pre>
 *   1 bit : one 1-bit plane                      (1 word per run)
 *   2 bits: one 2-bit plane                      (2 words per run)
 *   3 bits: a 2-bit plane (code bits 0-1) and a
 *           1-bit plane (code bit 2)             (2 + 1 = 3 words per run)
 *   4 bits: one 4-bit plane                      (4 words per run)
 * </pre>
 */
public enum BitWidth {
    ONE(1, List.of(new Plane(1, 0, 0))),
    TWO(2, List.of(new Plane(2, 0, 0))),
    THREE(3, List.of(new Plane(2, 0, 0), new Plane(1, 2, 2))),
    FOUR(4, List.of(new Plane(4, 0, 0)));

    /** Codes in one run along the pack axis; every plane fills whole words per run. */
    public static final int RUN = 32;

    private final int bits;
    private final List<Plane> planes;

    BitWidth(int bits, List<Plane> planes) {
        this.bits = bits;
        this.planes = planes;
    }

    /**
     * One bit plane of a width.
     *
     * @param width      bits per code in this plane (1, 2 or 4)
     * @param shift      which bits of the code this plane holds: {@code (code >>> shift) & mask()}
     * @param firstWord  index of this plane's first word within a run's {@code bits} words
     */
    public record Plane(int width, int shift, int firstWord) {
        /** Codes held by one 32-bit word of this plane. */
        public int codesPerWord() {
            return 32 / width;
        }

        /** Words this plane uses per run of 32 codes. */
        public int wordsPerRun() {
            return width;
        }

        public int mask() {
            return (1 << width) - 1;
        }

        /** Index, within a run's words, of the word holding code {@code i} (0..31) of the run. */
        public int wordOf(int i) {
            return firstWord + i / codesPerWord();
        }

        /** Bit position of code {@code i} (0..31) of the run inside its word. */
        public int bitOf(int i) {
            return width * (i % codesPerWord());
        }
    }

    public static BitWidth of(int bits) {
        return switch (bits) {
            case 1 -> ONE;
            case 2 -> TWO;
            case 3 -> THREE;
            case 4 -> FOUR;
            default -> throw new IllegalArgumentException("bits=" + bits + ", must be 1-4");
        };
    }

    public int bits() {
        return bits;
    }

    /** Largest code: {@code 2^bits - 1}. */
    public int maxCode() {
        return (1 << bits) - 1;
    }

    public List<Plane> planes() {
        return planes;
    }

    /** 32-bit words per run of 32 codes (equal to {@link #bits()}: exactly {@code bits} per code). */
    public int wordsPerRun() {
        return bits;
    }

    /** Runs of 32 needed to cover {@code packLength} codes (the last one may be partly unused). */
    public static int runs(int packLength) {
        return (packLength + RUN - 1) / RUN;
    }
}
