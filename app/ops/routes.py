from flask_smorest import Blueprint

blp = Blueprint("ops", __name__, url_prefix="", description="Operations")
