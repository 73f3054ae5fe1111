package io.kvmix.profiler.allocation;

/**
 * The code widths of one stream (keys or values) in each tier of a {@link TiersRule}, each 1-4.
 * They need not decrease from tier to tier.
 *
 * @param important width of the "important" tier, the most important layers
 * @param general   width of the "general" tier, the layers ranked right after them
 * @param rest      width of every other layer
 */
public record TierBits(int important, int general, int rest) {
    public TierBits {
        requireWidth("important", important);
        requireWidth("general", general);
        requireWidth("rest", rest);
    }

    private static void requireWidth(String tier, int bits) {
        if (bits < 1 || bits > 4) {
            throw new IllegalArgumentException("TierBits." + tier + "=" + bits + ", must be 1-4");
        }
    }
}
