"""Text from a model: the options, choosing each token (temperature, top-k, top-p), a row's text
(decoded, cut at a stop string or a length), the batch loop that generate and the server's engine
share, generating rows, and beam search."""
