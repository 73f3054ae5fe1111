package io.kvmix.core.quant;

/**
 * Where a packed matrix comes from, so that an error can name layer, stream, head, token and channel.
 *
 * @param layer         layer index (or -1 when unknown)
 * @param stream        "keys" or "values"
 * @param head          KV head
 * @param firstToken    sequence position of the block's first token
 * @param lanesAreTokens true for keys (lane = token, pack = channel), false for values
 */
public record MatrixOrigin(int layer, String stream, int head, int firstToken, boolean lanesAreTokens) {

    public static MatrixOrigin keys(int layer, int head, int firstToken) {
        return new MatrixOrigin(layer, "keys", head, firstToken, true);
    }

    public static MatrixOrigin values(int layer, int head, int firstToken) {
        return new MatrixOrigin(layer, "values", head, firstToken, false);
    }

    /** "layer 3 keys, kv-head 1, token 57, channel 12" for element (lane, pack). */
    public String describe(int lane, int pack) {
        int token = firstToken + (lanesAreTokens ? lane : pack);
        int channel = lanesAreTokens ? pack : lane;
        return prefix() + ", token " + token + ", channel " + channel;
    }

    /** "layer 3 keys, kv-head 1, tokens 32..63, channel 12" for a group along the lane axis. */
    public String describeGroup(int firstLane, int lanes, int pack) {
        if (lanesAreTokens) {
            return prefix() + ", tokens " + (firstToken + firstLane) + ".." + (firstToken + firstLane + lanes - 1)
                    + ", channel " + pack;
        }
        return prefix() + ", token " + (firstToken + pack) + ", channels " + firstLane + ".." + (firstLane + lanes - 1);
    }

    private String prefix() {
        return (layer >= 0 ? "layer " + layer + " " : "") + stream + ", kv-head " + head;
    }
}
