/** tokenizer.json through DJL's Hugging Face tokenizers (native, offline, no truncation). */
package io.kvmix.models.tokenizer;
