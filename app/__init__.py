"""clustersim explorer: the Streamlit app (installed as ``simulator.app``; ``clustersim app`` starts it).

``main.py`` is the entry point and ``views/`` holds the pages; ``charts`` (Plotly figures) and ``plans`` (config
helpers) are free of Streamlit, ``common`` is the Streamlit plumbing the pages share (caching, errors, URL state).
"""
