"""The app's pages, one module each (training, serving, tradeoffs, hardware, power), run by ``st.navigation``."""
