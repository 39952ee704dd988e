"""The model diagram: the task graph drawn with Graphviz (SVG, PNG, PDF, DOT) or as a Mermaid
flowchart, without importing torch."""
