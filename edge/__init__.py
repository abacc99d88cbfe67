"""The edge side: preprocessing, the XNOR-popcount engine and the edge CLI. Never imports torch."""
